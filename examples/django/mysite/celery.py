"""The project's Celery app. Workers run it: ``celery -A mysite worker -Q abstractruntime -n w1@%h``."""

import os

from celery import Celery

from abstractruntime_celery import install

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

app = Celery("mysite")
app.config_from_object("django.conf:settings", namespace="CELERY")
# The tasks (abstractruntime.start/tick/sweep) and the beat sweep. The registry is not passed
# here: CELERY_ABSTRACTRUNTIME_REGISTRY names it, for the workers and the web process alike.
install(app)
app.autodiscover_tasks()
