"""Helpers of the adversarial tests in tests/test_adv_h_*.py."""

from __future__ import annotations

from typing import Any

from tests.conftest import BROKER_URL


def make_app(settings: Any) -> Any:
    """A Celery app with our tasks, on the adv-h workflows and ``settings``."""
    from abstractruntime_celery.app import make_app as _make_app
    from abstractruntime_celery.tasks import install
    from tests.workflows_adv_h import registry

    app = _make_app(BROKER_URL, name=f"arc-{settings.queue}", config_module=None)
    install(app, registry=registry, settings=settings)
    return app
