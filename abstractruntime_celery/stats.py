"""Cluster-wide counters: the seed's ``SchedulerStats``, kept in Redis so every
worker adds to the same numbers (``{p}stats`` hash, ``{p}stats-errors`` list)."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Protocol

from abstractruntime.scheduler.scheduler import SchedulerStats as _SeedStats

from .context import TickContext
from .keys import Keys

MAX_ERRORS = 100
#: Longest error record kept (callers quote what users supplied; this is the backstop).
MAX_ERROR_CHARS = 1000


def _clip(message: str) -> str:
    return message if len(message) <= MAX_ERROR_CHARS else message[:MAX_ERROR_CHARS] + "...(cut)"


@dataclass
class SchedulerStats(_SeedStats):
    """The seed's stats (runs_resumed, runs_failed, poll_cycles, last_poll_at, errors),
    plus what a distributed driver must show: duplicates skipped, lease conflicts, ..."""

    runs_started: int = 0
    ticks: int = 0
    transitions: int = 0
    duplicates: int = 0
    early: int = 0
    lease_busy: int = 0
    lease_lost: int = 0
    controlled: int = 0  # tick saves refused because a cancel/pause landed mid-tick
    events_refused: int = 0  # events refused at the door (paused run, full inbox, ...)
    events_quarantined: int = 0  # unreadable inbox entries moved aside
    events_accepted: int = 0
    events_applied: int = 0
    timers_armed: int = 0
    orphans_recovered: int = 0
    parents_resumed: int = 0
    unknown_workflow: int = 0
    tick_errors: int = 0
    sweeps: int = 0
    sweeps_skipped: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


class Stats(Protocol):
    def incr(self, name: str, by: int = 1, ctx: TickContext | None = None) -> None: ...
    def error(self, message: str) -> None: ...
    def polled(self) -> None: ...
    def snapshot(self) -> SchedulerStats: ...


def _build(counts: dict[str, int], last_poll_at: str | None, errors: list[str]) -> SchedulerStats:
    known = {f.name for f in fields(SchedulerStats)}
    kwargs: dict[str, Any] = {k: v for k, v in counts.items() if k in known}
    extra = {k: v for k, v in counts.items() if k not in known}
    return SchedulerStats(last_poll_at=last_poll_at, errors=errors, extra=extra, **kwargs)


class RedisStats:
    def __init__(self, client: Any, keys: Keys) -> None:
        self.client = client
        self.key = keys.stats
        self.errors_key = keys.stats_errors

    def incr(self, name: str, by: int = 1, ctx: TickContext | None = None) -> None:
        """Add now, or in a tick with the tick's other counts, sent with its release."""
        if ctx is not None:
            ctx.queue.count(self.client, self.key, name, by)
        else:
            self.client.hincrby(self.key, name, by)

    def error(self, message: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(self.key, "runs_failed", 1)
        pipe.lpush(self.errors_key, f"{_now_iso()}: {_clip(message)}")
        pipe.ltrim(self.errors_key, 0, MAX_ERRORS - 1)
        pipe.execute()

    def polled(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(self.key, "poll_cycles", 1)
        pipe.hset(self.key, "last_poll_at", _now_iso())
        pipe.execute()

    def snapshot(self) -> SchedulerStats:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.key)
        pipe.lrange(self.errors_key, 0, MAX_ERRORS - 1)
        raw, errs = pipe.execute()
        decoded = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                   for k, v in raw.items()}
        last = decoded.pop("last_poll_at", None)
        counts = {k: int(v) for k, v in decoded.items()}
        errors = [e.decode() if isinstance(e, bytes) else e for e in reversed(errs)]
        return _build(counts, last, errors)


class LocalStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._errors: list[str] = []
        self._last: str | None = None

    def incr(self, name: str, by: int = 1, ctx: TickContext | None = None) -> None:
        with self._lock:
            self._counts[name] += by

    def error(self, message: str) -> None:
        with self._lock:
            self._counts["runs_failed"] += 1
            self._errors.append(f"{_now_iso()}: {_clip(message)}")
            del self._errors[:-MAX_ERRORS]

    def polled(self) -> None:
        with self._lock:
            self._counts["poll_cycles"] += 1
            self._last = _now_iso()

    def snapshot(self) -> SchedulerStats:
        with self._lock:
            return _build(dict(self._counts), self._last, list(self._errors))
