"""abstractruntime-celery: AbstractRuntime's Scheduler contract, on Celery workers.

Switch from the seed by changing one import line::

    from abstractruntime_celery import create_scheduled_runtime   # was: from abstractruntime import ...
"""

from __future__ import annotations

from typing import Any

from .config import Settings, load_settings
from .errors import (
    AbstractRuntimeCeleryError,
    ConfigError,
    CorruptRunError,
    LeaseLostError,
    PayloadError,
    RunControlledError,
    RunNotWaitingError,
    RunWaitTimeout,
    StoreError,
    StoreUnavailableError,
    UnknownRunError,
    UnknownWorkflowError,
    VersionConflictError,
    WaitKeyMismatchError,
)
from .registry import WorkflowRegistry
from .runtime import ScheduledRuntime, create_scheduled_runtime
from .scheduler import RunHandle, Scheduler
from .stats import SchedulerStats
from .stores.redis_ledger import RedisLedgerStore
from .stores.redis_runs import RedisRunStore
from .tasks import install

__version__ = "0.1.0"

__all__ = [
    "WorkflowRegistry", "Scheduler", "SchedulerStats", "ScheduledRuntime", "create_scheduled_runtime",
    "RunHandle", "install", "Settings", "load_settings", "app", "RedisRunStore", "RedisLedgerStore",
    "AbstractRuntimeCeleryError", "ConfigError", "CorruptRunError", "LeaseLostError", "PayloadError",
    "RunControlledError", "RunNotWaitingError", "RunWaitTimeout", "StoreError", "StoreUnavailableError",
    "UnknownRunError", "UnknownWorkflowError", "VersionConflictError", "WaitKeyMismatchError",
]


def __getattr__(name: str) -> Any:
    # ``celery -A abstractruntime_celery`` looks up ``app``; build it only when asked.
    if name in ("app", "celery"):
        from .app import app

        return app
    raise AttributeError(name)
