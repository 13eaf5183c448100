"""The shared state beside the run store: leases, inboxes, the timer book, stats,
and the sweep's cluster lock. In Redis for a fleet; in memory for the embedded mode."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .inbox import Inbox, LocalInbox, RedisInbox
from .lease import Leases, LocalLeases, RedisLeases
from .stats import LocalStats, RedisStats, Stats
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


@dataclass
class Coordination:
    leases: Leases
    inbox: Inbox
    timers: TimerBook
    stats: Stats
    sweep_lock: SweepLock
    client: Any | None = None

    @property
    def embedded(self) -> bool:
        return self.client is None


def open_coordination(url: str, prefix: str, lease_ttl_s: float) -> Coordination:
    """Redis-backed coordination for ``redis://`` URLs, in-process for ``memory://``.

    Raises:
        ValueError: the Redis URL is malformed.
    """
    if url == "memory://":
        return Coordination(
            leases=LocalLeases(prefix, lease_ttl_s),
            inbox=LocalInbox(),
            timers=LocalTimerBook(),
            stats=LocalStats(),
            sweep_lock=SweepLock(None, f"{prefix}sweep:lock"),
        )
    from .stores.redis_conn import connect

    client = connect(url)
    return Coordination(
        leases=RedisLeases(client, prefix, lease_ttl_s),
        inbox=RedisInbox(client, prefix),
        timers=RedisTimerBook(client, prefix),
        stats=RedisStats(client, prefix),
        sweep_lock=SweepLock(client, f"{prefix}sweep:lock"),
        client=client,
    )
