"""The sweep: the safety net that makes the store, not the broker, the truth.

Run by beat (default every 15 s) and by ``Scheduler.poll_once``. With every
broker message lost, sweeps still find and re-send:

1. timers: waits due within the horizon (and overdue ones) get their tick;
2. events: runs with inbox events not applied ``event_redeliver_s`` after acceptance;
3. orphans: RUNNING runs with no live lease, untouched for ``orphan_grace_s``
   (the run of a killed worker; Redis would give its message back only after
   ``visibility_timeout``);
4. parents: runs waiting on a child that has already ended (and orphaned children);
5. retention: runs that ended more than ``retention_s`` ago are deleted (``retention.py``).

Each pass reads at most ``sweep_batch`` candidates and goes on, next sweep, from
where it stopped (a cursor per pass, shared by the cluster), wrapping around at
the end. So runs the sweep cannot move (paused, of an unknown workflow, parents
of live children ...) never hide the ones behind them: every run it should move
is reached within ``ceil(candidates / sweep_batch) + 1`` sweeps. Only one sweep
runs per interval across the cluster (``SweepLock``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from abstractruntime import RunStatus, WaitReason

from . import retention
from .isotime import from_epoch, to_epoch
from .runstate import TERMINAL, child_of, paused
from .stores.redis import RedisRunStore
from .stores.redis.connection import redis_errors
from .walk import START, Cursor, page, zwalk
from .timers import Timers

if TYPE_CHECKING:
    from .driver import Driver

log = logging.getLogger(__name__)

#: Stores that cannot walk an index by score (memory, JSON files, SQLite) are read whole by
#: each pass (up to this many candidates), then walked in memory with the same cursor.
GENERIC_READ_ALL = 10_000_000

#: Sends (or, in ``poll_once``, runs) one tick: run id, reason, message id.
Send = Callable[[str, str, Optional[str]], None]


@dataclass
class SweepReport:
    """What one sweep sent, by kind, and how many candidates each pass read."""

    skipped: bool = False
    timers: int = 0
    due_now: list[str] = field(default_factory=list)
    events: int = 0
    orphans: int = 0
    parents: int = 0
    #: Ended runs deleted by retention (not counted in ``total``: nothing was sent).
    expired: int = 0
    #: The workers' ``retention_s`` when it is not this process's: retention deleted nothing.
    retention_mismatch: Optional[float] = None
    read: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.timers + self.events + self.orphans + self.parents


@dataclass
class Candidate:
    """A run a pass may move, with the few fields it decides on."""

    run_id: str
    score: float
    status: Optional[str]
    paused: bool = False
    until: Optional[str] = None
    child: Optional[str] = None


def sweep(driver: "Driver", *, force: bool = False, send: Optional[Send] = None) -> SweepReport:
    """One pass over the store. ``send`` (if given) ticks what is due now instead of the
    dispatcher: ``poll_once`` uses it to tick in the caller, like the seed.

    Raises:
        StoreUnavailableError: the store or coordination Redis cannot be reached.
    """
    settings = driver.settings
    if not force and not driver.coord.sweep_lock.try_take(max(0.5, settings.sweep_interval_s * 0.8)):
        driver.coord.stats.incr("sweeps_skipped")
        return SweepReport(skipped=True)
    cursors = driver.coord.cursors.begin()
    report, now = SweepReport(), time.time()
    source = RedisSource(driver) if _walks(driver) else GenericSource(driver)
    tick = send or (lambda run_id, reason, message_id: driver.send(run_id, reason, None, message_id))
    try:
        _timers(driver, source, report, now, tick, cursors)
        _events(driver, source, report, now, tick, cursors)
        _orphans(driver, source, report, now, tick, cursors)
        _parents(driver, source, report, now, tick, cursors)
        _retention(driver, report, now, cursors)
    finally:
        driver.coord.cursors.end(cursors)
    if report.total:
        log.info("sweep sent %s", report)
    elif report.expired:
        log.info("sweep deleted %d ended runs (retention)", report.expired)
    return report


def _walks(driver: "Driver") -> bool:
    store = driver.run_store
    return isinstance(store, RedisRunStore) and driver.coord.client is not None and store.shares_connection(driver.coord.client)


Cursors = dict[str, Cursor]


def _pass(driver: "Driver", name: str, report: SweepReport, cursors: Cursors,
          read: Callable[[Cursor, int], tuple[list[Candidate], Cursor]]) -> list[Candidate]:
    """Read the next batch of one pass from its cursor, and move the cursor on."""
    found, cursors[name] = read(cursors.get(name, START), driver.settings.sweep_batch)
    report.read[name] = len(found)
    return found


def _send(driver: "Driver", tick: Send, run_ids: list[str], reason: str) -> list[str]:
    """Tick each run no tick holds and none is queued for (``Leases.claim``); the runs sent."""
    claimed = driver.coord.leases.claim(run_ids)
    for run_id, message_id in claimed.items():
        tick(run_id, reason, message_id)
    return list(claimed)


def _timers(driver: "Driver", source: "Source", report: SweepReport, now: float, tick: Send, cursors: Cursors) -> None:
    timers = Timers(driver.coord.timers, driver.dispatcher, driver.settings.timer_horizon_s)
    horizon = now + driver.settings.timer_horizon_s
    due: list[str] = []
    for c in _pass(driver, "timers", report, cursors, lambda after, n: source.due(after, n, horizon)):
        if c.status != RunStatus.WAITING.value or c.paused or not c.until:
            continue  # paused, or moved on since: nothing to arm (a resume ticks it)
        if c.score <= now:
            due.append(c.run_id)
        elif timers.arm(c.run_id, c.until):
            report.timers += 1
    sent = _send(driver, tick, due, "sweep")
    report.due_now += sent
    report.timers += len(sent)


def _events(driver: "Driver", source: "Source", report: SweepReport, now: float, tick: Send, cursors: Cursors) -> None:
    older = now - driver.settings.event_redeliver_s
    found = _pass(driver, "events", report, cursors, lambda after, n: source.evented(after, n, older))
    report.events += len(_send(driver, tick, [c.run_id for c in found], "event"))


def _orphans(driver: "Driver", source: "Source", report: SweepReport, now: float, tick: Send, cursors: Cursors) -> None:
    """RUNNING runs idle past the grace with no lease and no tick queued (a queued tick is
    no orphan: behind a backlog it only waits its turn)."""
    idle = now - driver.settings.orphan_grace_s
    found = _pass(driver, "orphans", report, cursors, lambda after, n: source.running(after, n, idle))
    sent = _send(driver, tick, [c.run_id for c in found if c.status == RunStatus.RUNNING.value], "orphan")
    if sent:
        driver.coord.stats.incr("orphans_recovered", len(sent))
    report.orphans += len(sent)


def _parents(driver: "Driver", source: "Source", report: SweepReport, now: float, tick: Send, cursors: Cursors) -> None:
    found = [c for c in _pass(driver, "parents", report, cursors, source.parents)
             if c.status == RunStatus.WAITING.value and not c.paused and c.child]
    children = source.children([c.child for c in found if c.child])
    cutoff = now - driver.settings.orphan_grace_s
    ended = {t.value for t in TERMINAL}
    wake = [c.run_id for c in found if children.get(c.child or "", (None, 0.0))[0] in ended]
    stuck = [str(c.child) for c in found if children.get(c.child or "", (None, 0.0))[0] == RunStatus.RUNNING.value
             and children[str(c.child)][1] <= cutoff]
    report.parents += len(_send(driver, tick, wake, "child"))
    report.orphans += len(_send(driver, tick, stuck, "orphan"))


def _retention(driver: "Driver", report: SweepReport, now: float, cursors: Cursors) -> None:
    """Delete up to ``sweep_batch`` runs that ended ``retention_s`` ago (each checked again as
    it is deleted: see ``retention.py``); the runs kept (leased, parents of children left)
    are walked past, and met again once the walk wraps around. Nothing is deleted when the
    workers recorded another ``retention_s`` (``{p}retention``): the workers' setting rules."""
    keeper = retention.for_driver(driver, _walks(driver))
    if keeper is None:
        return
    cluster = retention.recorded(driver)
    if cluster is not None and cluster != driver.settings.retention_s:
        report.retention_mismatch = cluster
        log.warning("sweep: retention skipped: this process has retention_s=%g, the workers recorded %g "
                    "(%s); set ABSTRACTRUNTIME_CELERY_RETENTION_S as the workers do",
                    driver.settings.retention_s, cluster, driver.coord.keys.retention)
        return
    if not _retention_due(driver, keeper, now, cursors):
        return
    retention_s = driver.settings.retention_s
    found, cursors["retention"] = keeper.due(cursors.get("retention", START), driver.settings.sweep_batch, retention_s)
    report.read["retention"] = len(found)
    expired = keeper.expire(found, retention_s)
    report.expired += len(expired.deleted)
    if expired.deleted:
        driver.coord.stats.incr("runs_expired", len(expired.deleted))


def _retention_due(driver: "Driver", keeper: Any, now: float, cursors: Cursors) -> bool:
    """The stores that list every ended run to find the old ones (not Redis: it walks an
    index) start a new walk at most every ``retention.every_s``, noted in the cursors; a
    walk under way goes on each sweep."""
    if not isinstance(keeper, retention.StoreRetention) or cursors.get("retention", START) != START:
        return True
    # (a walk noted in the future was begun on a clock ahead of ours: not a reason to wait)
    if 0 <= now - cursors.get("retention-at", START)[0] < retention.every_s(driver.settings.retention_s):
        return False
    cursors["retention-at"] = (now, "")
    return True


class Source:
    """Where the passes read their candidates from."""

    def due(self, after: Cursor, limit: int, until: float) -> tuple[list[Candidate], Cursor]: ...
    def evented(self, after: Cursor, limit: int, older_than: float) -> tuple[list[Candidate], Cursor]: ...
    def running(self, after: Cursor, limit: int, idle_before: float) -> tuple[list[Candidate], Cursor]: ...
    def parents(self, after: Cursor, limit: int) -> tuple[list[Candidate], Cursor]: ...
    def children(self, ids: list[str]) -> dict[str, tuple[Optional[str], float]]: ...


class RedisSource(Source):
    """The Redis store's index sorted sets, walked by score with a cursor (``zwalk``)."""

    def __init__(self, driver: "Driver") -> None:
        self.store: RedisRunStore = driver.run_store
        self.coord = driver.coord
        self.keys = driver.coord.keys

    def due(self, after: Cursor, limit: int, until: float) -> tuple[list[Candidate], Cursor]:
        rows, cursor = self.store.walk(self.keys.due, low=float("-inf"), high=until, after=after, limit=limit,
                                       fields=("status", "paused", "until"))
        return [Candidate(r, s, v[0], v[1] == "1", until=v[2] or None) for r, s, v in rows], cursor

    def evented(self, after: Cursor, limit: int, older_than: float) -> tuple[list[Candidate], Cursor]:
        with redis_errors(self.coord.client):
            pairs, cursor = zwalk(self.coord.client, self.keys.inbox_runs, low=float("-inf"),
                                  high=older_than, after=after, limit=limit)
        return [Candidate(r, s, None) for r, s in pairs], cursor

    def running(self, after: Cursor, limit: int, idle_before: float) -> tuple[list[Candidate], Cursor]:
        key = self.keys.index("ix-status", RunStatus.RUNNING.value)
        rows, cursor = self.store.walk(key, low=float("-inf"), high=idle_before, after=after, limit=limit,
                                       fields=("status",))
        return [Candidate(r, s, v[0]) for r, s, v in rows], cursor

    def parents(self, after: Cursor, limit: int) -> tuple[list[Candidate], Cursor]:
        key = self.keys.index("ix-reason", WaitReason.SUBWORKFLOW.value)
        rows, cursor = self.store.walk(key, low=float("-inf"), high=float("inf"), after=after, limit=limit,
                                       fields=("status", "paused", "wkey"))
        out = []
        for run_id, score, (status, is_paused, wkey) in rows:
            child = wkey.split(":", 1)[1] if isinstance(wkey, str) and wkey.startswith("subworkflow:") else None
            out.append(Candidate(run_id, score, status, is_paused == "1", child=child))
        return out, cursor

    def children(self, ids: list[str]) -> dict[str, tuple[Optional[str], float]]:
        if not ids:
            return {}
        pipe = self.store.client.pipeline(transaction=False)
        for cid in ids:
            pipe.hmget(self.keys.run(cid), ["status", "updated"])
        out = {}
        for cid, value in zip(ids, pipe.execute(raise_on_error=False)):
            if isinstance(value, list) and value[0] is not None:
                out[cid] = (value[0], float(value[1] or 0.0))
        return out


class GenericSource(Source):
    """Stores that only answer ``QueryableRunStore`` queries (memory, files, SQLite): they
    have no index to walk by score, so each pass reads all its candidates (O(candidates)
    per sweep: use Redis for large fleets), sorts them, and walks on in memory from its
    cursor, moving at most ``sweep_batch`` of them (no candidate starves)."""

    def __init__(self, driver: "Driver") -> None:
        self.store = driver.run_store
        self.coord = driver.coord
        self._cap = GENERIC_READ_ALL

    def due(self, after: Cursor, limit: int, until: float) -> tuple[list[Candidate], Cursor]:
        runs = self.store.list_due_wait_until(now_iso=from_epoch(until), limit=self._cap)
        found = [Candidate(r.run_id, to_epoch(r.waiting.until), r.status.value, paused(r), until=r.waiting.until)
                 for r in runs if r.waiting is not None and r.waiting.until]
        return page(found, after, limit)

    def evented(self, after: Cursor, limit: int, older_than: float) -> tuple[list[Candidate], Cursor]:
        inbox = self.coord.inbox
        if self.coord.client is not None:
            pairs, cursor = zwalk(self.coord.client, self.coord.keys.inbox_runs, low=float("-inf"),
                                  high=older_than, after=after, limit=limit)
            return [Candidate(r, s, None) for r, s in pairs], cursor
        stale = inbox.stale_runs(older_than) if hasattr(inbox, "stale_runs") else []
        return page([Candidate(r, 0.0, None) for r in sorted(stale)], after, limit)

    def running(self, after: Cursor, limit: int, idle_before: float) -> tuple[list[Candidate], Cursor]:
        runs = self.store.list_runs(status=RunStatus.RUNNING, limit=self._cap)
        found = [Candidate(r.run_id, _epoch(r.updated_at), r.status.value) for r in runs]
        return page([c for c in found if c.score <= idle_before], after, limit)

    def parents(self, after: Cursor, limit: int) -> tuple[list[Candidate], Cursor]:
        runs = self.store.list_runs(status=RunStatus.WAITING, wait_reason=WaitReason.SUBWORKFLOW, limit=self._cap)
        return page([Candidate(r.run_id, _epoch(r.updated_at), r.status.value, paused(r), child=child_of(r))
                      for r in runs], after, limit)

    def children(self, ids: list[str]) -> dict[str, tuple[Optional[str], float]]:
        out = {}
        for cid in ids:
            child = self.store.load(cid)
            if child is not None:
                out[cid] = (child.status.value, _epoch(child.updated_at))
        return out


def _epoch(iso: Any) -> float:
    try:
        return to_epoch(str(iso))
    except (TypeError, ValueError):
        return 0.0
