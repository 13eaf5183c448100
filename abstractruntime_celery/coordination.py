"""The shared state beside the run store: leases, inboxes, the timer book, stats,
marks, notices, and the sweep's lock and cursors. In Redis for a fleet; in memory
for the embedded mode. ``open_coordination`` builds them all, in one place."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from .inbox import Inbox, LocalInbox, RedisInbox
from .keys import Keys
from .lease import Leases, LocalLeases, RedisLeases
from .marks import RunMarks
from .signals import Notices
from .stats import LocalStats, RedisStats, Stats
from .stores.redis.queries import START, Cursor
from .timers import LocalTimerBook, RedisTimerBook, TimerBook


class SweepLock:
    """At most one sweep per interval across the cluster, even with two beats.

    The lock is not released: it expires after ``hold_s``, so a second beat
    firing in the same interval finds it taken and skips.
    """

    def __init__(self, client: Any | None, key: str) -> None:
        self.client = client
        self.key = key
        self._local_until = 0.0
        self._lock = threading.Lock()

    def try_take(self, hold_s: float) -> bool:
        if self.client is not None:
            token = uuid.uuid4().hex
            return bool(self.client.set(self.key, token, nx=True, px=max(1, int(hold_s * 1000))))
        with self._lock:
            now = time.monotonic()
            if now < self._local_until:
                return False
            self._local_until = now + hold_s
            return True


class SweepCursors(Protocol):
    """Where each pass of the sweep goes on from (shared by every sweeper of the cluster),
    read when a sweep begins and written when it ends, with the sweep's own counters."""

    def begin(self) -> dict[str, Cursor]: ...
    def end(self, cursors: dict[str, Cursor]) -> None: ...


class RedisSweepCursors:
    """``{p}sweep-cursor`` hash: pass name -> ``<score>|<skip>``; one round trip at each end."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.client = client
        self.key = keys.sweep_cursor
        self.stats = keys.stats

    def begin(self) -> dict[str, Cursor]:
        """Count the sweep and read every pass's cursor."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(self.stats, "sweeps", 1)
        pipe.hgetall(self.key)
        _, raw = pipe.execute()
        return {name: _cursor(value) for name, value in raw.items()}

    def end(self, cursors: dict[str, Cursor]) -> None:
        """Write the cursors, and what the seed's stats say of a poll cycle."""
        pipe = self.client.pipeline(transaction=False)
        if cursors:
            pipe.hset(self.key, mapping={name: f"{c[0]!r}|{c[1]}" for name, c in cursors.items()})
        pipe.hincrby(self.stats, "poll_cycles", 1)
        pipe.hset(self.stats, "last_poll_at", datetime.now(timezone.utc).isoformat())
        pipe.execute()


def _cursor(raw: Any) -> Cursor:
    try:
        score, _, skip = str(raw).partition("|")
        return float(score), int(skip)
    except (TypeError, ValueError):
        return START


class LocalSweepCursors:
    def __init__(self, stats: Stats) -> None:
        self._cursors: dict[str, Cursor] = {}
        self._stats = stats

    def begin(self) -> dict[str, Cursor]:
        self._stats.incr("sweeps")
        return dict(self._cursors)

    def end(self, cursors: dict[str, Cursor]) -> None:
        self._cursors.update(cursors)
        self._stats.polled()


@dataclass
class Coordination:
    keys: Keys
    leases: Leases
    inbox: Inbox
    timers: TimerBook
    stats: Stats
    marks: RunMarks
    notices: Notices
    sweep_lock: SweepLock
    cursors: SweepCursors
    client: Any | None = None


def open_coordination(url: str, keys: Keys, lease_ttl_s: float) -> Coordination:
    """Redis-backed coordination for Redis URLs, in-process for ``memory://``.

    Raises:
        ValueError: the Redis URL is malformed.
        ConfigError: the prefix holds data of another key layout (``keys.check_layout``).
        StoreUnavailableError: the Redis cannot be reached.
    """
    if url == "memory://":
        stats = LocalStats()
        return Coordination(keys=keys, leases=LocalLeases(keys, lease_ttl_s), inbox=LocalInbox(),
                            timers=LocalTimerBook(lambda: stats.incr("timers_armed")), stats=stats,
                            marks=RunMarks(None, keys),
                            notices=Notices(None, keys), sweep_lock=SweepLock(None, keys.sweep_lock),
                            cursors=LocalSweepCursors(stats))
    from .keys import check_layout
    from .redact import redact_url
    from .stores.redis.connection import connect, redis_errors

    from .scripts import preload

    client = connect(url)
    with redis_errors(client):
        check_layout(client, keys, redact_url(url))
        preload(client)
    return Coordination(keys=keys, leases=RedisLeases(client, keys, lease_ttl_s), inbox=RedisInbox(client, keys),
                        timers=RedisTimerBook(client, keys), stats=RedisStats(client, keys),
                        marks=RunMarks(client, keys), notices=Notices(client, keys),
                        sweep_lock=SweepLock(client, keys.sweep_lock), cursors=RedisSweepCursors(client, keys),
                        client=client)
