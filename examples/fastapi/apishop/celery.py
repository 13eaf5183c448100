"""The app's Celery app, for the web process and the workers alike:
``celery -A apishop worker -Q abstractruntime -n w1@%h``. Settings come from the environment
(``ABSTRACTRUNTIME_CELERY_<NAME>``, the README's table)."""

import os

from celery import Celery

from abstractruntime_celery import install

from .workflows import registry

app = Celery("apishop", broker=os.environ.get("ABSTRACTRUNTIME_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
install(app, registry=registry)  # the registry, named once: the web process finds it here
