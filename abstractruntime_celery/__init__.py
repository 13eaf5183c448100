"""abstractruntime-celery: AbstractRuntime's Scheduler contract, on Celery workers.

Switch from the seed by changing one import line::

    from abstractruntime_celery import create_scheduled_runtime   # was: from abstractruntime import ...
"""

from __future__ import annotations

from typing import Any

from .compat import require_compatible_runtime

require_compatible_runtime()  # first: an incompatible abstractruntime fails here, naming its version

from .config import Settings, load_settings  # noqa: E402
from .errors import (  # noqa: E402
    AbstractRuntimeCeleryError,
    ConfigError,
    CorruptRunError,
    DispatchError,
    InboxFullError,
    LeaseLostError,
    PayloadError,
    RegistryError,
    RetryRefusedError,
    RunBusyError,
    RunControlledError,
    RunNotWaitingError,
    RunPausedError,
    RunWaitTimeout,
    StoreError,
    StoreUnavailableError,
    UnknownRunError,
    UnknownWorkflowError,
    VersionConflictError,
    WaitKeyMismatchError,
)
from .registry import WorkflowRegistry  # noqa: E402
from .runtime import ScheduledRuntime, create_scheduled_runtime  # noqa: E402
from .scheduler import RunHandle, Scheduler  # noqa: E402
from .stats import SchedulerStats  # noqa: E402
from .stores.redis import RedisLedgerStore, RedisRunStore  # noqa: E402
from .tasks import install  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "WorkflowRegistry", "Scheduler", "SchedulerStats", "ScheduledRuntime", "create_scheduled_runtime",
    "RunHandle", "install", "Settings", "load_settings", "app", "RedisRunStore", "RedisLedgerStore",
    "AbstractRuntimeCeleryError", "ConfigError", "CorruptRunError", "InboxFullError", "LeaseLostError",
    "PayloadError", "RegistryError", "RetryRefusedError", "RunBusyError", "RunControlledError",
    "RunNotWaitingError", "RunPausedError", "RunWaitTimeout", "StoreError", "StoreUnavailableError", "UnknownRunError", "UnknownWorkflowError",
    "VersionConflictError", "WaitKeyMismatchError", "DispatchError",
]


def __getattr__(name: str) -> Any:
    # ``celery -A abstractruntime_celery`` looks up ``app``; build it only when asked.
    if name in ("app", "celery"):
        from .app import app

        return app
    raise AttributeError(name)
