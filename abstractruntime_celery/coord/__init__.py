"""The shared state beside the run store, backends side by side: ``coord/redis.py`` for a
fleet, ``coord/local.py`` for the embedded mode (one process is the cluster).
``open_coordination`` builds one or the other, in one place, from a URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..inbox import Inbox
from ..keys import Keys
from ..lease import Leases
from ..marks import Marks
from ..signals import Notices
from ..stats import Stats
from ..walk import Cursor
from ..timers import TimerBook


class SweepLock(Protocol):
    """At most one sweep per interval across the cluster, even with two beats."""

    def try_take(self, hold_s: float) -> bool: ...


class SweepCursors(Protocol):
    """Where each pass of the sweep goes on from (shared by every sweeper of the cluster),
    read when a sweep begins and written when it ends, with the sweep's own counters."""

    def begin(self) -> dict[str, Cursor]: ...
    def end(self, cursors: dict[str, Cursor]) -> None: ...


@dataclass
class Coordination:
    keys: Keys
    leases: Leases
    inbox: Inbox
    timers: TimerBook
    stats: Stats
    marks: Marks
    notices: Notices
    sweep_lock: SweepLock
    cursors: SweepCursors
    client: Any | None = None
    #: The prefix held our layout's mark when this was opened: a worker or a created run has
    #: used it (False on a mistyped prefix, or one nothing has run under yet).
    marked: bool = True


def open_coordination(url: str, keys: Keys, lease_ttl_s: float, client: Any = None,
                      lost_tick_after_s: float | None = None) -> Coordination:
    """Redis-backed coordination for Redis URLs, in-process for ``memory://``. ``client``:
    the Redis store's own client, when the coordination lives in the store's Redis (one
    pool: the tick and the sweep then read and write both in one round trip).
    ``lost_tick_after_s``: how long a run's queued tick counts as queued (the note's life).

    Raises:
        ValueError: the Redis URL is malformed.
        ConfigError: the prefix holds data of another key layout (``keys.check_layout``).
        StoreUnavailableError: the Redis cannot be reached.
    """
    if url == "memory://":
        from . import local

        stats = local.LocalStats()
        leases = local.LocalLeases(keys, lease_ttl_s, lost_tick_after_s)
        return Coordination(keys=keys, leases=leases, inbox=local.LocalInbox(leases.holds),
                            timers=local.LocalTimerBook(lambda: stats.incr("timers_armed")), stats=stats,
                            marks=local.LocalMarks(), notices=Notices(None, keys), sweep_lock=local.LocalSweepLock(),
                            cursors=local.LocalSweepCursors(stats))
    from ..keys import check_layout
    from ..redact import redact_url
    from ..scripts import preload
    from ..stores.redis.connection import connect, redis_errors
    from . import redis as backend

    client = client if client is not None else connect(url)
    with redis_errors(client):
        marked = check_layout(client, keys, redact_url(url))
        preload(client)
    return Coordination(keys=keys, leases=backend.RedisLeases(client, keys, lease_ttl_s, lost_tick_after_s),
                        inbox=backend.RedisInbox(client, keys), timers=backend.RedisTimerBook(client, keys),
                        stats=backend.RedisStats(client, keys), marks=backend.RedisMarks(client, keys),
                        notices=Notices(client, keys), sweep_lock=backend.RedisSweepLock(client, keys.sweep_lock),
                        cursors=backend.RedisSweepCursors(client, keys), client=client, marked=marked)
