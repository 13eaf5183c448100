"""Fencing for stores that cannot check a lease themselves (memory, JSON files, SQLite).

The Redis run store checks the lease token inside the same Lua script that
writes the record, so a stale writer can never commit. The built-in stores
have no such hook; this wrapper checks the lease just before each save of a
leased run. That leaves a small window (check, then write) that the Redis store
does not have: the README says so, and recommends Redis for fleets.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Optional

from abstractruntime import RunState
from abstractruntime.storage.base import RunStore

from ..context import current
from ..errors import LeaseLostError

#: Given (lease key, token), says whether the token still holds the lease.
LeaseCheck = Callable[[str, str], bool]


class FencedRunStore(RunStore):
    """Delegates to ``inner``; refuses the save of a leased run whose lease was lost.

    Optional fast paths of the inner store (``list_event_waiters``, ``probe_control``, ...)
    are reached through attribute delegation, so the Runtime finds them as before.

    ``private_copies``: the inner store caches the objects it is given and hands them out
    again (the JSON-file store), while the Runtime changes a run in place: a save that was
    then refused would leave its uncommitted state in the cache, read by this process's next
    tick as if stored. Runs go in and out as copies.
    """

    def __init__(self, inner: Any, still_ours: LeaseCheck, private_copies: bool = False) -> None:
        self.inner = inner
        self._still_ours = still_ours
        self._copy: Callable[[Any], Any] = _private_copy if private_copies else (lambda run: run)
        #: Called with the run id after a tick's save of its leased run landed (the driver
        #: clears the run's failure notes: the save moved it).
        self.on_saved: Optional[Callable[[str], None]] = None

    def save(self, run: RunState) -> None:
        """Raises LeaseLostError if the current tick leased the run and no longer holds it."""
        ctx = current()
        fence = ctx.fence(run.run_id) if ctx is not None else None
        if fence is not None and not self._still_ours(fence.key, fence.token):
            raise LeaseLostError(run.run_id)
        self.inner.save(self._copy(run))
        if ctx is not None and ctx.moves(run.run_id):  # a tick's save moved it: its failure row ends
            ctx.moved = ctx.moved or run.run_id == ctx.run_id
            if self.on_saved is not None:
                self.on_saved(run.run_id)

    def load(self, run_id: str) -> Optional[RunState]:
        ctx = current()
        handed = ctx.take_handoff(run_id) if ctx is not None else None
        return handed if handed is not None else self._copy(self.inner.load(run_id))

    def create_if_absent(self, run: RunState) -> tuple[RunState, bool]:
        """Raises what the inner store raises (RunIdentityConflict, ...)."""
        out, created = self.inner.create_if_absent(self._copy(run))
        out = self._copy(out)
        ctx = current()
        if created and ctx is not None and ctx.run_id == run.run_id and ctx.on_created is not None:
            ctx.on_created()
        return out, created

    def supports_create_if_absent(self) -> bool:
        probe = getattr(self.inner, "supports_create_if_absent", None)
        return bool(probe()) if callable(probe) else hasattr(self.inner, "create_if_absent")

    def list_runs(self, **kwargs: Any) -> list[RunState]:
        return self.inner.list_runs(**kwargs)

    def list_due_wait_until(self, **kwargs: Any) -> list[RunState]:
        return self.inner.list_due_wait_until(**kwargs)

    def list_children(self, **kwargs: Any) -> list[RunState]:
        return self.inner.list_children(**kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "on_saved"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def _private_copy(run: Optional[RunState]) -> Optional[RunState]:
    """A copy of ``run`` whose JSON-like parts (what is stored) are its own; other objects a
    node left in ``vars`` (a lock, a client) are shared, as they never reach the store."""
    if run is None:
        return None
    out = copy.copy(run)
    out.vars = _clone(run.vars)
    out.output = _clone(run.output)
    if run.waiting is not None:
        out.waiting = copy.copy(run.waiting)
        out.waiting.details = _clone(run.waiting.details)
    return out


def _clone(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value

