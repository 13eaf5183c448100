"""The Django app: checks the settings when Django starts, so a malformed one fails there."""

from __future__ import annotations

from django.apps import AppConfig


class AbstractRuntimeConfig(AppConfig):
    name = "abstractruntime_celery.contrib.django"
    label = "abstractruntime_celery"
    verbose_name = "AbstractRuntime on Celery"

    def ready(self) -> None:
        """Raises ConfigError: the Celery app cannot be found or a setting is malformed
        (``manage.py`` and the worker stop here, not on the first request)."""
        from ...tasks import settings_for
        from . import celery_app

        settings_for(celery_app())
