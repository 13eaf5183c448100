"""Settings of the example project. Values you change per machine come from the environment
(``MYSITE_*``) so the tests can point the project at their own Redis databases and key prefix."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS = [
    "abstractruntime_celery.contrib.django",   # get_runtime, start_run, manage.py abstractruntime
    "myapp",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "mysite.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.environ.get("MYSITE_DB", str(BASE_DIR / "db.sqlite3"))}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

REDIS = os.environ.get("MYSITE_REDIS", "redis://127.0.0.1:6379")

# Celery reads every CELERY_* setting (mysite/celery.py: namespace="CELERY").
CELERY_BROKER_URL = os.environ.get("MYSITE_BROKER_URL", f"{REDIS}/0")
# abstractruntime_celery's settings: CELERY_ABSTRACTRUNTIME_<NAME>, names from the README's table.
CELERY_ABSTRACTRUNTIME_APP = "mysite.celery:app"                  # the app install() was called on
CELERY_ABSTRACTRUNTIME_REGISTRY = "myapp.workflows:registry"      # named once: workers and web read it
CELERY_ABSTRACTRUNTIME_STORE_URL = os.environ.get("MYSITE_STORE_URL", f"{REDIS}/1")
CELERY_ABSTRACTRUNTIME_KEY_PREFIX = os.environ.get("MYSITE_KEY_PREFIX", "mysite:")
CELERY_ABSTRACTRUNTIME_QUEUE = os.environ.get("MYSITE_QUEUE", "abstractruntime")
CELERY_ABSTRACTRUNTIME_ORPHAN_GRACE_S = float(os.environ.get("MYSITE_ORPHAN_GRACE_S", "60"))
CELERY_ABSTRACTRUNTIME_SWEEP_INTERVAL_S = float(os.environ.get("MYSITE_SWEEP_INTERVAL_S", "15"))

# Where the example's stand-in mailer writes (myapp/workflows.py: send_email).
OUTBOX_URL = os.environ.get("MYSITE_OUTBOX_URL", f"{REDIS}/1")
OUTBOX_KEY = f"{CELERY_ABSTRACTRUNTIME_KEY_PREFIX}outbox"
