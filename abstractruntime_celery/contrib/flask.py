"""Flask: an extension that configures the Celery app from ``app.config`` and gives each
process one ScheduledRuntime.

::

    from abstractruntime_celery.contrib.flask import AbstractRuntime

    arc = AbstractRuntime()

    def create_app():
        app = Flask(__name__)
        app.config["ABSTRACTRUNTIME_CELERY_BROKER_URL"] = "redis://127.0.0.1:6379/0"
        app.config["ABSTRACTRUNTIME_CELERY_STORE_URL"] = "redis://127.0.0.1:6379/1"
        app.config["ABSTRACTRUNTIME_CELERY_REGISTRY"] = "shop.workflows:registry"
        arc.init_app(app)
        return app

    # in a view:  run_id = arc.start_run("onboarding", {"email": email});  arc.runtime.respond(...)

Config keys are the environment variables' names (``ABSTRACTRUNTIME_CELERY_<NAME>``, the README's
table): ``init_app`` copies them onto the Celery conf, where the workers read them; a variable
set in the environment still wins. The worker runs the same app:
``celery -A shop.make_celery worker -Q abstractruntime -n w1@%h``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

from celery import Celery

from ..config import CONF_PREFIX, ENV_PREFIX, Settings
from ..errors import ConfigError
from ..runtime import ScheduledRuntime, create_scheduled_runtime
from ..tasks import install, settings_for
from .process import ProcessRuntime, check_start, make_start

__all__ = ["AbstractRuntime", "EXTENSION"]

#: ``app.extensions`` key of the extension's per-app state.
EXTENSION = "abstractruntime"
BROKER_KEY = f"{ENV_PREFIX}BROKER_URL"


@dataclass
class _State:
    celery: Celery
    runtime: ProcessRuntime


class AbstractRuntime:
    """The Flask extension; one instance may serve several apps (``init_app`` each)."""

    def __init__(self, app: Any = None, *, celery: Optional[Celery] = None, registry: Any = None) -> None:
        self._celery = celery
        self._registry = registry
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any, *, celery: Optional[Celery] = None, registry: Any = None) -> None:
        """Configure the Celery app (``celery``, else ``app.extensions["celery"]`` as Flask's
        Celery guide sets it, else a new one on ``ABSTRACTRUNTIME_CELERY_BROKER_URL``), install
        the tasks on it, and check the settings now.

        Raises:
            ConfigError: a setting is malformed, or the Celery app accepts pickle.
        """
        celery_app = celery or self._celery or app.extensions.get("celery")
        if celery_app is None:
            celery_app = Celery(app.import_name)
            if isinstance(app.config.get("CELERY"), dict):  # Flask's guide keeps Celery's conf there
                celery_app.config_from_object(app.config["CELERY"])
        if not isinstance(celery_app, Celery):
            raise ConfigError(f"celery must be a Celery app, got {type(celery_app).__name__}")
        if app.config.get(BROKER_KEY):
            celery_app.conf.broker_url = app.config[BROKER_KEY]
        for f in fields(Settings):
            key = ENV_PREFIX + f.name.upper()
            if app.config.get(key) is not None:
                celery_app.conf[CONF_PREFIX + f.name] = app.config[key]
        install(celery_app, registry=registry if registry is not None else self._registry)
        settings_for(celery_app)  # a malformed setting fails here, at start

        def build() -> ScheduledRuntime:
            return create_scheduled_runtime(app=celery_app, auto_start=False)

        app.extensions[EXTENSION] = _State(celery_app, ProcessRuntime(build))
        app.extensions.setdefault("celery", celery_app)

    @staticmethod
    def _state(app: Any = None) -> _State:
        if app is None:
            from flask import current_app

            app = current_app._get_current_object()
        try:
            return app.extensions[EXTENSION]
        except KeyError:
            raise ConfigError("AbstractRuntime.init_app(app) was not called for this Flask app") from None

    def celery_for(self, app: Any = None) -> Celery:
        """The Celery app of ``app`` (default: the current Flask app).

        Raises:
            ConfigError: ``init_app`` was not called for it.
        """
        return self._state(app).celery

    @property
    def celery(self) -> Celery:
        """The current Flask app's Celery app.

        Raises:
            ConfigError: ``init_app`` was not called for it.
            RuntimeError: outside a Flask app context (Flask's own error).
        """
        return self.celery_for()

    def runtime_for(self, app: Any = None) -> ScheduledRuntime:
        """The ScheduledRuntime of this process for ``app``, built on first use (under a lock)
        and shared by every thread.

        Raises:
            ConfigError: ``init_app`` was not called, or the registry cannot be loaded.
            StoreUnavailableError: the store cannot be reached.
        """
        return self._state(app).runtime.get()

    @property
    def runtime(self) -> ScheduledRuntime:
        """The current Flask app's runtime.

        Raises:
            As ``runtime_for``; RuntimeError outside a Flask app context (Flask's own error).
        """
        return self.runtime_for()

    def start_run(self, workflow_id: str, vars: Optional[dict[str, Any]] = None, *,
                  run_id: Optional[str] = None) -> str:
        """Save a run of ``workflow_id``, send its first tick, and return its id.

        Raises:
            UnknownWorkflowError: the registry does not know ``workflow_id``.
            PayloadError: ``vars`` is not a JSON object under ``max_payload_bytes``, or
                ``run_id`` is malformed.
            ConfigError, StoreUnavailableError: as ``runtime``.
            DispatchError: the run is saved but the broker refused its tick (see ``make_start``).
        """
        sr = self.runtime
        return make_start(sr, check_start(sr, workflow_id, vars, run_id))
