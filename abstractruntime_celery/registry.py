"""Resolve the workflow registry in a worker: workflows are code, so every
process builds the same ``WorkflowRegistry`` from one dotted path.

We reuse AbstractRuntime's ``WorkflowRegistry``; this module only loads it.
"""

from __future__ import annotations

import importlib
from typing import Any, Iterable

from abstractruntime import WorkflowSpec
from abstractruntime.scheduler.registry import WorkflowRegistry

from .errors import AbstractRuntimeCeleryError, ConfigError, RegistryError, UnknownWorkflowError

__all__ = ["WorkflowRegistry", "load_registry", "as_registry", "require_workflow", "lookup_workflow", "load_object"]


def as_registry(obj: Any) -> WorkflowRegistry:
    """Turn a registry, a spec, an iterable of specs or a callable returning one into a registry.

    Raises:
        ConfigError: the object is none of those.
    """
    if callable(obj) and not isinstance(obj, (WorkflowRegistry, WorkflowSpec)):
        obj = obj()
    if isinstance(obj, WorkflowRegistry):
        return obj
    if isinstance(obj, WorkflowSpec):
        obj = [obj]
    if isinstance(obj, Iterable) and not isinstance(obj, (str, bytes, dict)):
        registry = WorkflowRegistry()
        for spec in obj:
            if not isinstance(spec, WorkflowSpec):
                raise ConfigError(f"Registry entries must be WorkflowSpec, got {type(spec).__name__}")
            registry.register(spec)
        return registry
    raise ConfigError(
        f"A workflow registry must be a WorkflowRegistry, WorkflowSpecs or a callable, got {type(obj).__name__}"
    )


def load_object(path: str, default_attr: str) -> Any:
    """Import ``pkg.mod:attr`` (``pkg.mod`` alone means ``pkg.mod:<default_attr>``).

    Raises:
        ConfigError: the module cannot be imported or lacks the attribute.
    """
    module_name, _, attr = path.partition(":")
    attr = attr or default_attr
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        # The module itself not found (not one it imports): the usual cause is where the process runs.
        missing = isinstance(exc, ModuleNotFoundError) and bool(exc.name) \
            and (module_name == exc.name or module_name.startswith(f"{exc.name}."))
        hint = (" (it is imported from the working directory and PYTHONPATH: start the process in the "
                "directory that holds the package, or add that directory to PYTHONPATH)") if missing else ""
        raise ConfigError(f"Cannot import module '{module_name}' (from '{path}'): {exc}{hint}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(f"Module '{module_name}' has no attribute '{attr}' (from '{path}')") from exc


def load_registry(path: str) -> WorkflowRegistry:
    """Import ``pkg.mod:attr`` (or ``pkg.mod`` with an attribute named ``registry``).

    Raises:
        ConfigError: the path is malformed, the module cannot be imported, or the
            attribute is missing or of the wrong type.
    """
    if not path:
        return WorkflowRegistry()
    return as_registry(load_object(path, "registry"))


def require_workflow(registry: WorkflowRegistry, workflow_id: str, run_id: str | None = None) -> WorkflowSpec:
    """Look a workflow up, naming the run when it is missing.

    Raises:
        UnknownWorkflowError: this process's registry does not know ``workflow_id``.
        RegistryError: the registry's lookup raised (see ``lookup_workflow``).
    """
    spec = lookup_workflow(registry, workflow_id)
    if spec is None:
        raise UnknownWorkflowError(workflow_id, run_id)
    return spec


def lookup_workflow(registry: WorkflowRegistry, workflow_id: str) -> WorkflowSpec | None:
    """``registry.get(workflow_id)``, with a lookup that raises told apart from a workflow
    the registry does not know: a lazy registry (files, a service, a database behind it)
    can fail at call time, and a task must wait that out, not drop its message.

    Raises:
        RegistryError: the registry's ``get`` raised (the cause in one line).
    """
    try:
        return registry.get(workflow_id)
    except AbstractRuntimeCeleryError:
        raise
    except Exception as exc:
        cause = " ".join(str(exc).split())[:300]
        raise RegistryError(str(workflow_id), f"{type(exc).__name__}: {cause}") from exc
