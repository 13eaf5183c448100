"""Writes a tick may put off until it releases its lease, to send them in one round trip.

Counters, notices and bookkeeping deletes are not needed by anyone until the
tick is over, so while a tick runs they queue here, and ``RedisLeases.release``
sends them in the same pipeline as the release script. Outside a tick they go
out at once.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Any, Callable, Iterator

Op = Callable[[Any], Any]

_ops: contextvars.ContextVar[list[Op] | None] = contextvars.ContextVar("abstractruntime_celery_ops", default=None)


def defer(client: Any, op: Op) -> None:
    """Run ``op(client)`` now, or queue it if a tick is collecting writes."""
    ops = _ops.get()
    if ops is None:
        op(client)
    else:
        ops.append(op)


@contextmanager
def collecting() -> Iterator[list[Op]]:
    """Collect deferred writes for the duration of the block; the caller sends them."""
    ops: list[Op] = []
    token = _ops.set(ops)
    try:
        yield ops
    finally:
        _ops.reset(token)
