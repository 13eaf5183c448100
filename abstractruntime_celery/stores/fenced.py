"""Fencing for stores that cannot check a lease themselves (memory, JSON files, SQLite).

The Redis run store checks the lease token inside the same Lua script that
writes the record, so a stale writer can never commit. The built-in stores
have no such hook; this wrapper checks the lease just before each save of a
leased run. That leaves a small window (check, then write) that the Redis store
does not have: the README says so, and recommends Redis for fleets.
"""

from __future__ import annotations

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
    """

    def __init__(self, inner: Any, still_ours: LeaseCheck) -> None:
        self.inner = inner
        self._still_ours = still_ours

    def save(self, run: RunState) -> None:
        """Raises LeaseLostError if the current tick leased the run and no longer holds it."""
        ctx = current()
        fence = ctx.fence(run.run_id) if ctx is not None else None
        if fence is not None and not self._still_ours(fence.key, fence.token):
            raise LeaseLostError(run.run_id)
        self.inner.save(run)

    def load(self, run_id: str) -> Optional[RunState]:
        ctx = current()
        handed = ctx.take_handoff(run_id) if ctx is not None else None
        return handed if handed is not None else self.inner.load(run_id)

    def create_if_absent(self, run: RunState) -> tuple[RunState, bool]:
        """Raises what the inner store raises (RunIdentityConflict, ...)."""
        out, created = self.inner.create_if_absent(run)
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
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
