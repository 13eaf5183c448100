"""The app's Celery app, for the web process and the workers alike:
``celery -A apishop worker -Q abstractruntime -n w1@%h``. Settings come from the environment
(``ABSTRACTRUNTIME_CELERY_<NAME>``, the README's table), read once, here: a malformed one
fails the import, so the API and the worker both refuse to start."""

import os

from celery import Celery

from abstractruntime_celery import install, load_settings

from .workflows import registry

app = Celery("apishop", broker=os.environ.get("ABSTRACTRUNTIME_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
# The registry and the settings, named once: the web process (runtime_lifespan) finds them here.
# Defaults for this example; ABSTRACTRUNTIME_CELERY_STORE_URL (and every other variable) wins.
settings = load_settings({"abstractruntime_store_url": "redis://127.0.0.1:6379/1"})
install(app, registry=registry, settings=settings)
