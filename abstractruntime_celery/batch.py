"""Writes a tick may put off, to send them with another round trip it makes anyway.

Two queues live while a tick holds its lease (``collecting``):

* *deferred* writes - counters, notices, bookkeeping deletes - are not needed by
  anyone until the tick is over: ``RedisLeases.release`` sends them after the
  release script, in the same pipeline.
* *ahead* writes - ledger appends - must land before the next write of run
  state (AbstractRuntime appends a step's record before the save that commits
  it). The run store sends them first in the pipeline of its next save, a
  ledger read sends them first in its own, and the release sends whatever is
  left before it gives the lease back. Redis runs a pipeline in order, so the
  order of writes is the one the Runtime asked for; only the round trips go.

Outside a tick both kinds go out at once.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Any, Callable, Iterator

Op = Callable[[Any], Any]

_ops: contextvars.ContextVar[list[Op] | None] = contextvars.ContextVar("abstractruntime_celery_ops", default=None)
_ahead: contextvars.ContextVar[list[tuple[Any, Op]] | None] = contextvars.ContextVar(
    "abstractruntime_celery_ahead", default=None
)


def defer(client: Any, op: Op) -> None:
    """Run ``op(client)`` now, or queue it for the release if a tick is collecting writes."""
    ops = _ops.get()
    if ops is None:
        op(client)
    else:
        ops.append(op)


def collecting_ahead() -> bool:
    """True while a tick collects writes, so ``ahead`` will queue rather than send."""
    return _ahead.get() is not None


def ahead(client: Any, op: Op) -> None:
    """Queue ``op`` (a write on ``client``'s Redis) to go first in the next write's pipeline.

    Raises:
        RuntimeError: no tick is collecting writes (check ``collecting_ahead`` first).
    """
    queue = _ahead.get()
    if queue is None:
        raise RuntimeError("batch.ahead() outside a collecting() block")
    queue.append((client, op))


def take_ahead(client: Any) -> list[Op]:
    """The queued ahead writes, in order, handed over for sending now in a pipeline of
    ``client``. Writes queued for another Redis server go out first, on their own."""
    queue = _ahead.get()
    if not queue:
        return []
    entries = list(queue)
    queue.clear()
    pool = getattr(client, "connection_pool", None)
    out: list[Op] = []
    for other, op in entries:
        if getattr(other, "connection_pool", None) is pool:
            out.append(op)
        else:
            op(other)
    return out


def _flush_leftovers() -> None:
    """Send ahead writes nobody took (a block that never wrote again): never drop one."""
    queue = _ahead.get()
    while queue:
        other, op = queue.pop(0)
        op(other)


@contextmanager
def collecting() -> Iterator[list[Op]]:
    """Collect deferred and ahead writes for the block; the caller sends the deferred
    ones (the list yielded) and ``take_ahead()``'s leftovers."""
    ops: list[Op] = []
    token = _ops.set(ops)
    token_ahead = _ahead.set([])
    try:
        yield ops
    finally:
        try:
            _flush_leftovers()
        finally:
            _ahead.reset(token_ahead)
        _ops.reset(token)
