"""Django: one runtime per process, starts that wait for the transaction, and
``manage.py abstractruntime ...`` (the ``abstractruntime-celery`` command, on Django's settings).

Setup (``settings.py``)::

    INSTALLED_APPS = [..., "abstractruntime_celery.contrib.django"]
    CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    CELERY_ABSTRACTRUNTIME_APP = "mysite.celery:app"            # the app install() was called on
    CELERY_ABSTRACTRUNTIME_REGISTRY = "myapp.workflows:registry"
    CELERY_ABSTRACTRUNTIME_STORE_URL = "redis://127.0.0.1:6379/1"

Every ``CELERY_ABSTRACTRUNTIME_<NAME>`` is the setting ``<name>`` of the README's table: Celery
reads Django's settings with ``app.config_from_object("django.conf:settings", namespace="CELERY")``,
which turns ``CELERY_ABSTRACTRUNTIME_STORE_URL`` into ``abstractruntime_store_url``, the name
``config.py`` reads. The environment (``ABSTRACTRUNTIME_CELERY_<NAME>``) still wins.
"""

from __future__ import annotations

from typing import Any, Optional

from ...errors import ConfigError
from ...runtime import ScheduledRuntime, create_scheduled_runtime
from ..process import ProcessRuntime, check_start, make_start

__all__ = ["celery_app", "get_runtime", "start_run", "APP_SETTING"]

#: The Django setting naming the Celery app (``pkg.mod:attr``; ``pkg.mod`` means ``pkg.mod:app``).
APP_SETTING = "CELERY_ABSTRACTRUNTIME_APP"


def celery_app() -> Any:
    """The project's Celery app: the one ``CELERY_ABSTRACTRUNTIME_APP`` names, else Celery's
    current app if our tasks are installed on it (``from .celery import app`` in the
    project's ``__init__.py`` makes it current).

    Raises:
        ConfigError: the setting names nothing importable, or no app with the tasks is found.
    """
    from celery import Celery, current_app
    from django.conf import settings

    from ...dispatch import TICK_TASK
    from ...registry import load_object

    path = getattr(settings, APP_SETTING, None)
    if path:
        app = load_object(str(path), "app")
        if not isinstance(app, Celery):
            raise ConfigError(f"{APP_SETTING}={path!r} is a {type(app).__name__}, not a Celery app")
        return app
    app = current_app._get_current_object()
    if TICK_TASK not in app.tasks:
        raise ConfigError(f"No Celery app with abstractruntime_celery installed: set {APP_SETTING} = "
                          "'mysite.celery:app' in settings.py, and call install(app) in mysite/celery.py")
    return app


def _build() -> ScheduledRuntime:
    # auto_start=False: a web process runs no sweep loop (beat does) and no threads of its own.
    return create_scheduled_runtime(app=celery_app(), auto_start=False)


#: The process's runtime (Django serves requests from many threads: it is built once, under a lock).
runtime = ProcessRuntime(_build)


def get_runtime() -> ScheduledRuntime:
    """The ScheduledRuntime of this process, built on first use and shared by every thread.

    Raises:
        ConfigError: a setting is malformed, the app or the registry cannot be loaded.
        StoreUnavailableError: the store cannot be reached.
    """
    return runtime.get()


def start_run(workflow_id: str, vars: Optional[dict[str, Any]] = None, *, run_id: Optional[str] = None,
              on_commit: bool = True, using: Optional[str] = None) -> str:
    """Start a run of ``workflow_id`` and return its id at once.

    With ``on_commit`` (the default) the run is saved and its first tick sent only when the
    current transaction of database ``using`` commits (at once outside a transaction): a
    rolled-back transaction leaves no run, so nothing of it ever runs. The id is chosen now,
    so it can be stored in the same transaction. Input is checked now, at the caller.

    Raises:
        UnknownWorkflowError: the registry does not know ``workflow_id``.
        PayloadError: ``vars`` is not a JSON object under ``max_payload_bytes``, or ``run_id``
            is malformed.
        ConfigError, StoreUnavailableError: as ``get_runtime``. After the commit, the store's
            error or a ``DispatchError`` (the run is saved, its tick not sent: the sweep sends
            it) is raised from the commit (the transaction stays committed).
    """
    sr = get_runtime()
    pending = check_start(sr, workflow_id, vars, run_id)
    if on_commit:
        from django.db import transaction

        transaction.on_commit(lambda: make_start(sr, pending), using=using)
    else:
        make_start(sr, pending)
    return pending.run_id
