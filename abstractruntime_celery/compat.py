"""Check, when the package is imported, that the installed AbstractRuntime has what we use.

``pyproject.toml`` sets a floor (0.6) and no cap: a release we have not tested may
work, or may have moved something we rely on. So instead of capping we check the
features themselves, and a runtime that lacks one fails at import with its
version and the list of what is missing, not later in a worker.
"""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType
from typing import Any, Callable

__all__ = ["installed_version", "missing_features", "require_compatible_runtime"]

Loader = Callable[[str], ModuleType]

#: Names the package imports (module, names).
REQUIRED_NAMES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("abstractruntime", ("Runtime", "RunState", "RunStatus", "WaitReason", "WorkflowSpec", "Effect",
                         "EffectType", "StepPlan", "QueryableRunStore", "InMemoryRunStore",
                         "InMemoryLedgerStore", "JsonFileRunStore", "JsonlLedgerStore")),
    ("abstractruntime.core.models", ("RunState", "RunStatus", "WaitReason", "WaitState", "StepRecord",
                                     "StepStatus")),
    ("abstractruntime.storage.base", ("RunStore", "LedgerStore")),
    ("abstractruntime.storage.sqlite", ("SqliteDatabase", "SqliteRunStore", "SqliteLedgerStore")),
    ("abstractruntime.scheduler.registry", ("WorkflowRegistry",)),
    ("abstractruntime.scheduler.scheduler", ("SchedulerStats",)),
)

#: Enum members the package compares against (class in ``abstractruntime``, members).
REQUIRED_MEMBERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("EffectType", ("EMIT_EVENT", "START_SUBWORKFLOW", "WAIT_EVENT", "WAIT_UNTIL")),
    ("WaitReason", ("EVENT", "USER", "JOB", "UNTIL", "SUBWORKFLOW")),
    ("RunStatus", ("RUNNING", "WAITING", "COMPLETED", "FAILED", "CANCELLED")),
)

#: Keyword parameters the package passes (``Runtime`` method, parameters).
REQUIRED_PARAMETERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("__init__", ("run_store", "ledger_store", "effect_handlers", "workflow_registry", "artifact_store",
                  "effect_policy")),
    ("start", ("workflow", "vars", "actor_id", "session_id", "run_id")),  # run_id: idempotent starts
    ("tick", ("workflow", "run_id", "max_steps")),
    ("resume", ("workflow", "run_id", "wait_key", "payload", "max_steps")),  # max_steps=0: apply only
    ("cancel_run", ("reason",)),
)


def _parameters(func: Any) -> set[str] | None:
    try:
        return set(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return None


def _handlers_of(root: ModuleType) -> list[str]:
    """The two private attributes of a real Runtime the driver relies on: the ``_handlers``
    dict it wraps (EMIT_EVENT, START_SUBWORKFLOW), and ``_run_store``, the one attribute its
    control methods (pause/resume/cancel) read the store through (``control.py``)."""
    store = root.InMemoryRunStore()
    try:
        runtime = root.Runtime(run_store=store, ledger_store=root.InMemoryLedgerStore())
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot build the Runtime we wrap"
        return [f"Runtime(run_store=InMemoryRunStore(), ledger_store=InMemoryLedgerStore()) fails: {exc}"]
    missing = [] if getattr(runtime, "_run_store", None) is store else ["Runtime._run_store (the run store)"]
    handlers = getattr(runtime, "_handlers", None)
    if not isinstance(handlers, dict):
        return missing + ["Runtime._handlers (a dict of effect handlers)"]
    return missing + [f"Runtime._handlers[EffectType.{name}]" for name in ("EMIT_EVENT", "START_SUBWORKFLOW")
                      if getattr(root.EffectType, name, None) not in handlers]


def missing_features(load: Loader = importlib.import_module) -> list[str]:
    """What this package uses and the AbstractRuntime that ``load`` imports lacks (empty: all there).

    Raises:
        ImportError: ``abstractruntime`` itself cannot be imported.
    """
    root = load("abstractruntime")
    missing: list[str] = []
    for module_name, names in REQUIRED_NAMES:
        try:
            module = root if module_name == "abstractruntime" else load(module_name)
        except ImportError:
            missing.append(f"module {module_name}")
            continue
        missing += [f"{module_name}.{n}" for n in names if not hasattr(module, n)]
    for enum_name, members in REQUIRED_MEMBERS:
        enum = getattr(root, enum_name, None)
        if enum is not None:
            missing += [f"{enum_name}.{m}" for m in members if not hasattr(enum, m)]
    runtime = getattr(root, "Runtime", None)
    if runtime is not None:
        for method, wanted in REQUIRED_PARAMETERS:
            params = _parameters(getattr(runtime, method, None))
            if params is None:
                missing.append(f"Runtime.{method}()")
            else:
                missing += [f"Runtime.{method}({p}=)" for p in wanted if p not in params]
    try:
        store = load("abstractruntime.storage.base").RunStore
    except (ImportError, AttributeError):
        store = None  # reported above
    if store is not None and not callable(getattr(store, "create_if_absent", None)):
        missing.append("RunStore.create_if_absent")
    if not missing:
        missing += _handlers_of(root)
    return missing


def installed_version(load: Loader = importlib.import_module) -> str:
    """The installed AbstractRuntime's version, or "unknown". Raises nothing."""
    try:
        version = getattr(load("abstractruntime"), "__version__", None)
    except Exception:  # noqa: BLE001 - a version is only for the message
        version = None
    if not version:
        try:
            from importlib.metadata import version as dist_version

            version = dist_version("abstractruntime")
        except Exception:  # noqa: BLE001
            version = None
    return str(version or "unknown")


def require_compatible_runtime(load: Loader = importlib.import_module) -> None:
    """Fail now if the installed AbstractRuntime lacks a feature this package uses.

    Raises:
        ImportError: naming the installed abstractruntime version and every missing
            feature (or saying that abstractruntime cannot be imported at all).
    """
    try:
        missing = missing_features(load)
    except ImportError as exc:
        raise ImportError(f"abstractruntime_celery needs abstractruntime >= 0.6, which cannot be "
                          f"imported: {exc}") from exc
    if missing:
        raise ImportError(
            f"abstractruntime_celery cannot use the installed abstractruntime {installed_version(load)}: "
            f"it lacks {', '.join(missing)}. Install a release that has them (0.6 to 0.13 are tested)."
        )
