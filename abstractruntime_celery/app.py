"""The default Celery app, so ``celery -A abstractruntime_celery worker -B`` works
once the user has written a workflow module and named it in
``ABSTRACTRUNTIME_CELERY_REGISTRY`` (or ``abstractruntime_registry`` in celeryconfig.py)."""

from __future__ import annotations

import os

from celery import Celery

from .tasks import install

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"


def make_app(broker_url: str | None = None, *, name: str = "abstractruntime_celery",
             config_module: str | None = "celeryconfig", **conf: object) -> Celery:
    """A Celery app with our tasks installed. The broker URL comes from the argument,
    ``ABSTRACTRUNTIME_CELERY_BROKER_URL``, ``CELERY_BROKER_URL``, ``celeryconfig.py``, or
    defaults to the local Redis.

    Raises:
        ConfigError: the configuration accepts pickle or a setting is malformed.
    """
    app = Celery(name)
    if config_module:
        app.config_from_object(config_module, silent=True)
    broker = (broker_url or os.environ.get("ABSTRACTRUNTIME_CELERY_BROKER_URL")
              or os.environ.get("CELERY_BROKER_URL"))
    if broker:
        app.conf.broker_url = broker
    elif not app.conf.broker_url:
        app.conf.broker_url = DEFAULT_BROKER
    app.conf.update(conf)
    return install(app)


app = make_app()
