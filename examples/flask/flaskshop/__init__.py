"""The example Flask app: ``create_app`` (Flask's factory pattern) with the extension."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from flask import Flask

from abstractruntime_celery.contrib.flask import AbstractRuntime

arc = AbstractRuntime()


def create_app(config: Optional[Mapping[str, Any]] = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        # abstractruntime_celery's settings: ABSTRACTRUNTIME_CELERY_<NAME> (the README's table).
        ABSTRACTRUNTIME_CELERY_BROKER_URL="redis://127.0.0.1:6379/0",
        ABSTRACTRUNTIME_CELERY_STORE_URL="redis://127.0.0.1:6379/1",
        ABSTRACTRUNTIME_CELERY_REGISTRY="flaskshop.workflows:registry",  # named once
    )
    app.config.from_prefixed_env("FLASKSHOP")  # e.g. FLASKSHOP_ABSTRACTRUNTIME_CELERY_STORE_URL
    if config:
        app.config.update(config)
    arc.init_app(app)

    from .views import bp

    app.register_blueprint(bp)
    return app
