"""What a leased tick knows about its own run without asking Redis again.

While a tick holds a run's lease, nobody else ticks that run, so two of the
Runtime's reads can be answered from what the tick has already seen:

* the *control probe* (``probe_control``: is the run cancelled or paused?) that
  AbstractRuntime makes before every node and every save. The answer the lease
  read (or the tick's last save) confirmed is reused for ``control_ttl_s``; and
  every fenced save of the Redis run store checks, in its Lua script, that the
  stored status and pause flag are still the ones the tick knew. A cancel or
  pause that lands mid-tick is therefore never overwritten: the save is refused
  (``RunControlledError``) exactly where the probe would have stopped the tick,
  at the latest one node later.
* the *idempotency probe* (``find_completed_result``): when the run's index of
  completed steps was empty as the lease was taken, only this tick can have
  added to it, and the ledger store remembers what it added.

Outside a tick (``knowing`` not entered) nothing is known and every read goes
to Redis as before.
"""

from __future__ import annotations

import contextvars
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

#: Control fields as the Redis run store keeps them: (status value, paused).
Control = tuple[str, bool]


@dataclass
class Known:
    """One leased run, as this tick last confirmed it."""

    control: Optional[Control] = None
    confirmed_at: float = 0.0  # time.monotonic() of the read or save that confirmed ``control``
    done_empty: bool = False  # the completed-steps index was empty when the lease was taken
    done: dict[str, str] = field(default_factory=dict)  # idempotency key -> record JSON, added by this tick
    created: Any = None  # the RunState this tick's create just wrote (a start), for its first load
    fresh: bool = False  # a run id this process just made up: its create may be queued, unchecked by a read
    queued_create: Any = None  # that create while it waits in the queue: a later save replaces it
    born: bool = False  # this tick created the run

    def confirm(self, control: Control, at: float | None = None) -> None:
        self.control = control
        self.confirmed_at = time.monotonic() if at is None else at

    def fresh_control(self, ttl_s: float) -> Optional[Control]:
        """The confirmed control fields if confirmed within ``ttl_s``, else None."""
        if self.control is None or time.monotonic() - self.confirmed_at > ttl_s:
            return None
        return self.control


_known: contextvars.ContextVar[Optional[dict[str, Known]]] = contextvars.ContextVar(
    "abstractruntime_celery_known", default=None
)


@contextmanager
def knowing() -> Iterator[dict[str, Known]]:
    """Keep what this tick learns about its leased run(s) for the block's duration."""
    token = _known.set({})
    try:
        yield _known.get() or {}
    finally:
        _known.reset(token)


def learn(run_id: str) -> Optional[Known]:
    """The entry for ``run_id``, made if a tick is ``knowing``; None outside one."""
    table = _known.get()
    if table is None:
        return None
    entry = table.get(run_id)
    if entry is None:
        entry = table[run_id] = Known()
    return entry


def known(run_id: str) -> Optional[Known]:
    """The entry for ``run_id`` if this tick has one, else None."""
    table = _known.get()
    return None if table is None else table.get(run_id)
