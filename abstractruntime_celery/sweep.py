"""The sweep: the safety net that makes the store, not the broker, the truth.

Run by beat (default every 15 s) and by ``Scheduler.poll_once``. With every
broker message lost, one sweep still finds and re-sends:

1. timers: waits due within the horizon (and overdue ones) get their tick;
2. events: inbox events not applied ``event_redeliver_s`` after acceptance;
3. orphans: RUNNING runs with no live lease, untouched for ``orphan_grace_s``
   (the run of a killed worker; Redis would give its message back only after
   ``visibility_timeout``);
4. parents: runs waiting on a child that has already ended.

Only one sweep runs per interval across the cluster (``SweepLock``). With
nothing due, a sweep is a handful of indexed queries.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from abstractruntime import RunStatus, WaitReason

from . import timers
from .isotime import from_epoch as _iso
from .tick import TERMINAL, _child_id, arm_timer

if TYPE_CHECKING:
    from .driver import Driver

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    """What one sweep sent, by kind."""

    skipped: bool = False
    timers: int = 0
    due_now: list[str] = field(default_factory=list)
    events: int = 0
    orphans: int = 0
    parents: int = 0

    @property
    def total(self) -> int:
        return self.timers + self.events + self.orphans + self.parents


def sweep(d: "Driver", *, force: bool = False,
          on_due: Callable[[str], None] | None = None) -> SweepReport:
    """One pass over the store. ``on_due`` (if given) takes runs already due instead of
    the dispatcher: ``poll_once`` uses it to tick them in the caller, like the seed.

    Raises:
        StoreUnavailableError: the store or coordination Redis cannot be reached.
    """
    s = d.settings
    if not force and not d.coord.sweep_lock.try_take(max(0.5, s.sweep_interval_s * 0.8)):
        d.coord.stats.incr("sweeps_skipped")
        return SweepReport(skipped=True)
    d.coord.stats.incr("sweeps")
    report = SweepReport()
    now = time.time()

    for run in d.run_store.list_due_wait_until(now_iso=_iso(now + s.timer_horizon_s), limit=s.sweep_batch):
        if run.waiting is None or not run.waiting.until:
            continue
        overdue = timers.parse_until(run.waiting.until) <= now
        if overdue and on_due is not None:
            report.due_now.append(run.run_id)
            on_due(run.run_id)
        elif overdue:
            d.dispatcher.tick(run.run_id, reason="sweep")
            report.timers += 1
        elif arm_timer(d, run):
            report.timers += 1

    for run_id in d.coord.inbox.stale_runs(now - s.event_redeliver_s, s.sweep_batch):
        d.dispatcher.tick(run_id, reason="event")
        report.events += 1

    orphan_cutoff = _iso(now - s.orphan_grace_s)
    for run in d.run_store.list_runs(status=RunStatus.RUNNING, limit=s.sweep_batch):
        if (run.updated_at or "") <= orphan_cutoff and not d.coord.leases.is_held(run.run_id):
            d.dispatcher.tick(run.run_id, reason="orphan")
            d.coord.stats.incr("orphans_recovered")
            report.orphans += 1

    for parent in d.run_store.list_runs(status=RunStatus.WAITING, wait_reason=WaitReason.SUBWORKFLOW,
                                        limit=s.sweep_batch):
        child_id = _child_id(parent)
        child = d.run_store.load(child_id) if child_id else None
        if child is not None and child.status in TERMINAL:
            d.dispatcher.tick(parent.run_id, reason="child")
            report.parents += 1
        elif child is not None and child.status == RunStatus.RUNNING and not d.coord.leases.is_held(child.run_id) \
                and (child.updated_at or "") <= orphan_cutoff:
            d.dispatcher.tick(child.run_id, reason="orphan")
            report.orphans += 1
    d.coord.stats.polled()
    if report.total:
        log.info("sweep sent %s", report)
    return report
