"""One ``ScheduledRuntime`` per web process, shared by its threads.

A ScheduledRuntime holds Redis connection pools and a Celery producer pool, which are
thread-safe but not fork-safe: it is built lazily, on first use, under a lock, and built
again in a forked child (gunicorn or uWSGI forking after the app was imported). Building one
per request would open pools per request; one per process is what the frameworks share.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..runtime import ScheduledRuntime

#: Every holder, weakly: a fork gives each a fresh lock (one held by another thread at fork
#: time would stay held in the child), without keeping a dropped holder's runtime alive.
_holders: "weakref.WeakSet[ProcessRuntime]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for holder in list(_holders):
        holder._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class ProcessRuntime:
    """Builds the process's ScheduledRuntime once (``factory``), on the first ``get``."""

    def __init__(self, factory: Callable[[], ScheduledRuntime]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._runtime: Optional[ScheduledRuntime] = None
        self._pid = 0
        self.builds = 0  # how many times a runtime was built in this process (tests read it)
        _holders.add(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self.builds = 0

    def get(self) -> ScheduledRuntime:
        """The runtime of this process, built now if it is the first call here.

        Raises:
            ConfigError: a setting is malformed, or the registry cannot be loaded.
            StoreUnavailableError: the store cannot be reached.
        """
        runtime, pid = self._runtime, self._pid
        if runtime is not None and pid == os.getpid():
            return runtime
        with self._lock:
            if self._runtime is None or self._pid != os.getpid():
                self._runtime = self._factory()
                self._pid = os.getpid()
                self.builds += 1
            return self._runtime

    @property
    def built(self) -> bool:
        """True once this process has its runtime."""
        return self._runtime is not None and self._pid == os.getpid()

    def close(self) -> None:
        """Stop the runtime of this process, if one was built; the next ``get`` builds another.

        Raises:
            Nothing of its own (``ScheduledRuntime.stop`` only joins its threads).
        """
        with self._lock:
            runtime, self._runtime = self._runtime, None
        if runtime is not None and self._pid == os.getpid():
            runtime.stop()


@dataclass(frozen=True)
class PendingStart:
    """A start checked now and made later (after a transaction commits)."""

    workflow_id: str
    vars: Optional[dict[str, Any]]
    run_id: str


def check_start(runtime: ScheduledRuntime, workflow_id: str, vars: Optional[dict[str, Any]] = None,
                run_id: Optional[str] = None) -> PendingStart:
    """Check a start at the caller, before anything is stored, and choose its run id.

    Raises:
        UnknownWorkflowError: the registry does not know ``workflow_id``.
        PayloadError: ``vars`` is not a JSON object under ``max_payload_bytes``, or ``run_id``
            is malformed or in the children's id space.
    """
    kwargs = runtime.driver.start_kwargs(workflow_id, vars, run_id, None, None)
    return PendingStart(kwargs["workflow"].workflow_id, vars, str(kwargs["run_id"]))


def make_start(runtime: ScheduledRuntime, pending: PendingStart) -> str:
    """Save the run (RUNNING) and send its first tick; a run with this id already saved is
    found, not made twice. Once saved, the run is the store's: a lost tick is re-sent by
    the sweep after ``orphan_grace_s``.

    Raises:
        StoreUnavailableError: the store cannot be reached (nothing was saved).
        DispatchError: the run is saved but the broker refused its tick (the sweep ticks it
            after ``orphan_grace_s``; starting the same id again sends it).
    """
    return runtime.driver.start_run(pending.workflow_id, vars=pending.vars, run_id=pending.run_id, dispatch=True)
