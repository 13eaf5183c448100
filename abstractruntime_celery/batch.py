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
from collections import Counter
from typing import Any, Callable, Iterator, NamedTuple, Optional

Op = Callable[[Any], Any]
Check = Callable[[Any], None]


class Ahead(NamedTuple):
    """One queued ahead write: ``op(target)`` queues or runs it; ``check(result)``
    raises if its reply says it was refused; ``commit``: it saves run state (which
    must land before the tick runs another node or tells anyone to look)."""

    op: Op
    check: Optional[Check] = None
    commit: bool = False


_ops: contextvars.ContextVar[list[Op] | None] = contextvars.ContextVar("abstractruntime_celery_ops", default=None)
_counts: contextvars.ContextVar[dict[str, Counter[str]] | None] = contextvars.ContextVar(
    "abstractruntime_celery_counts", default=None
)
_ahead: contextvars.ContextVar[list[tuple[Any, Ahead]] | None] = contextvars.ContextVar(
    "abstractruntime_celery_ahead", default=None
)


def defer(client: Any, op: Op) -> None:
    """Run ``op(client)`` now, or queue it for the release if a tick is collecting writes."""
    ops = _ops.get()
    if ops is None:
        op(client)
    else:
        ops.append(op)


def count(client: Any, key: str, field: str, by: int = 1) -> None:
    """``HINCRBY key field by`` now, or, in a tick, added up with the tick's other counts of
    ``key`` and sent with the release as one command."""
    ops, table = _ops.get(), _counts.get()
    if ops is None or table is None:
        client.hincrby(key, field, by)
        return
    counts = table.get(key)
    if counts is None:
        counts = table[key] = Counter()
        ops.append(lambda target: _add_counts(client, target, key, counts))
    counts[field] += by


_many_scripts: dict[int, Any] = {}


def _add_counts(client: Any, target: Any, key: str, counts: Counter[str]) -> Any:
    from . import _scripts

    # exactly one command, whatever the counts: the caller pairs each op with one reply
    items = [(f, n) for f, n in counts.items() if n] or [(next(iter(counts)), 0)]
    if len(items) == 1:
        return target.hincrby(key, items[0][0], items[0][1])
    script = _many_scripts.get(id(client))
    if script is None:
        script = _many_scripts[id(client)] = _scripts.register(client, "hincrby_many")
    return _scripts.call_in(target, script, [key], [x for f, n in items for x in (f, n)])


def collecting_ahead() -> bool:
    """True while a tick collects writes, so ``ahead`` will queue rather than send."""
    return _ahead.get() is not None


def ahead(client: Any, op: Op, check: Check | None = None, *, commit: bool = False) -> Ahead:
    """Queue ``op`` (a write on ``client``'s Redis) to go first in the next write's pipeline;
    ``check`` sees its reply there. Returns the queued item (for ``withdraw``).

    Raises:
        RuntimeError: no tick is collecting writes (check ``collecting_ahead`` first).
    """
    queue = _ahead.get()
    if queue is None:
        raise RuntimeError("batch.ahead() outside a collecting() block")
    item = Ahead(op, check, commit)
    queue.append((client, item))
    return item


def withdraw(item: Ahead) -> bool:
    """Take ``item`` back out of the queue if it has not been sent; True if it was."""
    queue = _ahead.get() or []
    for i, (_, queued) in enumerate(queue):
        if queued is item:
            del queue[i]
            return True
    return False


def has_ahead() -> bool:
    """True if ahead writes wait to be sent (a read must send them first)."""
    return bool(_ahead.get())


def has_commit() -> bool:
    """True if a queued write saves run state (``flush_all`` before the next node runs)."""
    return any(item.commit for _, item in _ahead.get() or ())


def flush_all() -> None:
    """Send every queued ahead write now, one pipeline per Redis server: a message is
    about to tell another process to look, or the tick is about to run another node.

    Raises:
        Exception: as ``settle_ahead`` (a refused save raises LeaseLostError, ...).
    """
    queue = _ahead.get()
    if not queue:
        return
    entries = list(queue)
    queue.clear()
    i = 0
    while i < len(entries):
        client = entries[i][0]
        pool = getattr(client, "connection_pool", None)
        group: list[Ahead] = []
        while i < len(entries) and getattr(entries[i][0], "connection_pool", None) is pool:
            group.append(entries[i][1])
            i += 1
        pipe = client.pipeline(transaction=False)
        for item in group:
            item.op(pipe)
        settle_ahead(client, group, pipe.execute(raise_on_error=False))


def take_ahead(client: Any) -> list[Ahead]:
    """The queued ahead writes, in order, handed over for sending now in a pipeline of
    ``client`` (then ``settle_ahead``). Writes queued for another Redis server go out
    first, on their own."""
    queue = _ahead.get()
    if not queue:
        return []
    entries = list(queue)
    queue.clear()
    pool = getattr(client, "connection_pool", None)
    out: list[Ahead] = []
    for other, item in entries:
        if getattr(other, "connection_pool", None) is pool:
            out.append(item)
        else:
            settle_ahead(other, [item], [item.op(other)])
    return out


def settle_ahead(client: Any, items: list[Ahead], results: list[Any]) -> None:
    """After ``pipe.execute(raise_on_error=False)``: in order, run again on ``client`` an op
    whose script the server had forgotten (NOSCRIPT ran nothing), raise a Redis error,
    and let each check see its reply.

    Raises:
        Exception: the first Redis error or refused check (LeaseLostError, ...).
    """
    from redis.exceptions import NoScriptError

    for item, result in zip(items, results):
        if isinstance(result, NoScriptError):
            result = item.op(client)
        elif isinstance(result, Exception):
            raise result
        if item.check is not None:
            item.check(result)


def send_ahead(client: Any, then: Op | None = None) -> Any:
    """Send the queued ahead writes now, in one pipeline, followed by ``then`` (a read or
    write that needs them landed); returns ``then``'s reply (None without one). A NOSCRIPT
    reply is returned, for the caller's ``_scripts.settle``.

    Raises:
        Exception: as ``settle_ahead``; or ``then``'s own Redis error.
    """
    from redis.exceptions import NoScriptError

    items = take_ahead(client)
    if not items:
        return then(client) if then is not None else None
    pipe = client.pipeline(transaction=False)
    for item in items:
        item.op(pipe)
    if then is not None:
        then(pipe)
    results = pipe.execute(raise_on_error=False)
    settle_ahead(client, items, results[:len(items)])
    reply = results[-1] if then is not None else None
    if isinstance(reply, Exception) and not isinstance(reply, NoScriptError):
        raise reply
    return reply


@contextmanager
def collecting() -> Iterator[list[Op]]:
    """Collect deferred and ahead writes for the block; the caller sends the deferred
    ones (the list yielded) and ``take_ahead()``'s leftovers."""
    ops: list[Op] = []
    token = _ops.set(ops)
    token_counts = _counts.set({})
    token_ahead = _ahead.set([])
    try:
        yield ops
    finally:
        try:
            flush_all()  # ahead writes nobody took (the block never wrote again): never drop one
        finally:
            _ahead.reset(token_ahead)
            _counts.reset(token_counts)
            _ops.reset(token)
