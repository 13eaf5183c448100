"""Cluster-wide counters: the seed's ``SchedulerStats``, kept in Redis so every
worker adds to the same numbers (``{p}stats`` hash, ``{p}stats-errors`` list)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Protocol

from abstractruntime.scheduler.scheduler import SchedulerStats as _SeedStats

from .context import TickContext

MAX_ERRORS = 100
#: Longest error record kept (callers quote what users supplied; this is the backstop).
MAX_ERROR_CHARS = 1000


def clip_error(message: str) -> str:
    """An error record cut to MAX_ERROR_CHARS."""
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
    wrong_store: int = 0  # tick messages put back: sent for another store than this worker's
    tick_errors: int = 0
    sweeps: int = 0
    sweeps_skipped: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


class Stats(Protocol):
    def incr(self, name: str, by: int = 1, ctx: TickContext | None = None) -> None: ...
    def error(self, message: str) -> None: ...
    def polled(self) -> None: ...
    def snapshot(self) -> SchedulerStats: ...


def build_snapshot(counts: dict[str, int], last_poll_at: str | None, errors: list[str]) -> SchedulerStats:
    """Stats from raw counters: the seed's fields and ours, the rest in ``extra``."""
    known = {f.name for f in fields(SchedulerStats)}
    kwargs: dict[str, Any] = {k: v for k, v in counts.items() if k in known}
    extra = {k: v for k, v in counts.items() if k not in known}
    return SchedulerStats(last_poll_at=last_poll_at, errors=errors, extra=extra, **kwargs)


