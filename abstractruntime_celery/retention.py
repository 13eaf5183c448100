"""Retention: a run that ended (completed, failed, cancelled) leaves the store, with
every key it owns, ``retention_s`` after it ended (0 keeps runs for ever).

Redis runs ``noeviction``: without this, every finished run, its ledger and its notes
stay for ever. The sweep enforces it, one bounded batch per sweep (``sweep_batch``),
walking on from a cursor. With the Redis store the candidates come from ``{p}ended``,
a sorted set by end time that ``save_run.lua`` writes in the same script as the save
that ends a run (no round trip is added to a tick), scored with Redis ``TIME``: the end
time and the cutoff come from one clock, not from the ending worker's and the sweeper's
(which may disagree by more than ``retention_s``). One script
(``lua/expire_runs.lua``) checks each run again and deletes it, so a run a concurrent
operation brings back is never deleted. The other stores have no such index: their
ended runs are listed whole and each is deleted under its lease; their end time is the
run's ``updated_at`` (the ending worker's clock), their cutoff the sweeper's clock: keep
those clocks in sync (NTP) and ``retention_s`` far above their skew.

What is never deleted: a run that is not ended, a run whose lease is held, a run with a
child still in the store (a parent goes after its last child), and a child whose parent
is still in the store and has not ended: a live parent may read its child again (a
paused one takes its result when resumed) or, paused at its spawn node before its wait
was saved, spawn it again under the same id and must find it, not run it a second time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from abstractruntime import RunState

from . import scripts
from .context import TickContext, entered
from .isotime import to_epoch
from .keys import RUN_FAMILIES
from .runstate import TERMINAL
from .stores.redis.connection import redis_errors
from .walk import Cursor, page, zwalk

if TYPE_CHECKING:
    from .driver import Driver

log = logging.getLogger(__name__)

#: Runs one ``expire_runs.lua`` call deletes at most: each is about 25 commands, and a script
#: blocks Redis while it runs (100 runs: about 13 ms with the round trip, on a busy 2-core machine).
SCRIPT_BATCH = 100
#: The stores without an index of ended runs read at most this many of each ended status per pass.
GENERIC_READ_ALL = 10_000_000
#: ... and begin such a read at most this often (and at most every hundredth of ``retention_s``):
#: a run deleted a few minutes late after days is no loss; reading every ended run each sweep is.
GENERIC_EVERY_S = 300.0
#: Coordination notes a run owns beside its record and ledger (its lease is given back, not deleted).
_NOTE_FAMILIES = tuple(f for f in RUN_FAMILIES if f not in ("run", "ledger", "ledger-done", "lease", "ix-parent"))


@dataclass
class Expired:
    """What one retention batch did: the runs deleted, and those kept for now."""

    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


class RedisRetention:
    """Retention on the Redis store: walk ``{p}ended``, delete with ``expire_runs.lua``."""

    def __init__(self, driver: "Driver") -> None:
        self.client = driver.coord.client
        self.keys = driver.coord.keys
        self._script = scripts.register(self.client, "expire_runs")

    def due(self, after: Cursor, limit: int, retention_s: float) -> tuple[list[str], Cursor]:
        """Up to ``limit`` runs that ended ``retention_s`` or more ago by Redis ``TIME``, after the cursor.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        with redis_errors(self.client):
            secs, micros = self.client.time()
            cutoff = secs + micros / 1e6 - retention_s
            pairs, cursor = zwalk(self.client, self.keys.ended, low=float("-inf"), high=cutoff,
                                  after=after, limit=limit)
        return [run_id for run_id, _ in pairs], cursor

    def expire(self, run_ids: list[str], retention_s: float) -> Expired:
        """Delete those of ``run_ids`` that ended ``retention_s`` ago by Redis ``TIME`` and are
        still ended, unleased, childless, and whose parent is gone or ended.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        result = Expired()
        for i in range(0, len(run_ids), SCRIPT_BATCH):
            with redis_errors(self.client):
                raw = self._script(keys=[], args=[self.keys.prefix, repr(float(retention_s)), ",".join(RUN_FAMILIES),
                                                  *run_ids[i:i + SCRIPT_BATCH]], client=self.client)
            out = [r.decode() if isinstance(r, bytes) else str(r) for r in raw]
            split = out.index("")
            result.deleted += out[:split]
            result.kept += out[split + 1:]
        return result


class StoreRetention:
    """Retention on the memory, JSON-file and SQLite stores. They cannot list ended runs by
    end time, so a walk reads every ended run (O(ended runs): use Redis for large fleets;
    a new walk begins at most every ``every_s``), then deletes at most a batch a sweep,
    each under the run's lease after loading it again (a run brought back, one with a
    child left, or one whose parent is live, stays)."""

    def __init__(self, driver: "Driver") -> None:
        self.driver = driver
        self.store = driver.run_store
        self.coord = driver.coord

    def due(self, after: Cursor, limit: int, retention_s: float) -> tuple[list[str], Cursor]:
        """As ``RedisRetention.due``, by this process's clock against ``updated_at``.

        Raises:
            Exception: what the store's ``list_runs`` raises.
        """
        cutoff = time.time() - retention_s
        found = []
        for status in TERMINAL:
            for run in self.store.list_runs(status=status, limit=GENERIC_READ_ALL):
                ended_at = _epoch(run.updated_at)
                if ended_at <= cutoff:
                    found.append(_Ended(str(run.run_id), ended_at))
        taken, cursor = page(found, after, limit)
        return [e.run_id for e in taken], cursor

    def expire(self, run_ids: list[str], retention_s: float) -> Expired:
        """As ``RedisRetention.expire``, one run at a time under its lease.

        Raises:
            Exception: what the stores raise.
        """
        cutoff = time.time() - retention_s
        result = Expired()
        for run_id in run_ids:
            (result.deleted if self._expire_one(run_id, cutoff) else result.kept).append(run_id)
        return result

    def _expire_one(self, run_id: str, cutoff: float) -> bool:
        leases = self.coord.leases
        lease = leases.acquire(run_id)
        if lease is None:
            return False  # a tick or a control action holds it: not now
        ctx = TickContext(run_id, fences={run_id: lease.fence}, clears_notes=False)
        deleted = False
        try:
            with entered(ctx):
                run = self.store.load(run_id)
                if (run is not None and run.status in TERMINAL and _epoch(run.updated_at) <= cutoff
                        and not self.store.list_children(parent_run_id=run_id) and not self._parent_live(run)):
                    self.store.delete(run_id)
                    ledger = self.driver.runtime.ledger_store
                    if hasattr(ledger, "delete"):
                        ledger.delete(run_id)
                    self._drop_notes(run_id)
                    deleted = True
        finally:
            if leases.release(lease, ctx) and not deleted:  # a tick was asked meanwhile
                self.driver.send(run_id, "asked", ctx.next_id)
        return deleted

    def _parent_live(self, run: RunState) -> bool:
        """Its parent is in the store and has not ended (as ``expire_runs.lua`` decides)."""
        if not run.parent_run_id:
            return False
        parent = self.store.load(str(run.parent_run_id))
        return parent is not None and parent.status not in TERMINAL

    def _drop_notes(self, run_id: str) -> None:
        """The run's coordination notes: its keys in Redis, or (embedded) its entries in
        this process's failure notes, timer book, inbox and trace contexts."""
        client, keys = self.coord.client, self.coord.keys
        if client is None:
            self.driver.ticker.tracing.forget(run_id)
            self.coord.marks.moved(run_id)
            self.coord.timers.fired(run_id)
            events = self.coord.inbox.pending(run_id).events
            if events:
                self.coord.inbox.done(run_id, [e.event_id for e in events])
            return
        with redis_errors(client):
            pipe = client.pipeline(transaction=True)
            pipe.delete(*[keys.owned(f, run_id) for f in _NOTE_FAMILIES])
            pipe.zrem(keys.inbox_runs, run_id)
            pipe.execute()


@dataclass
class _Ended:
    run_id: str
    score: float


def record(driver: "Driver") -> Optional[float]:
    """Write this worker's ``retention_s`` as the cluster's (``{p}retention``), so a sweep in
    any other process (a shell's CLI ``sweep``, a web app's scheduler) deletes by the
    workers' retention, not its own; returns the value it replaced (None: none, or the same).
    Nothing is recorded without a coordination Redis (one process: nobody else sweeps).

    Raises:
        StoreUnavailableError: Redis cannot be reached.
    """
    client = driver.coord.client
    if client is None:
        return None
    with redis_errors(client):
        old = client.set(driver.coord.keys.retention, repr(float(driver.settings.retention_s)), get=True)
    previous = _number(old)
    return None if previous is None or previous == driver.settings.retention_s else previous


def recorded(driver: "Driver") -> Optional[float]:
    """The cluster's ``retention_s`` as the workers last recorded it (None: none recorded).

    Raises:
        StoreUnavailableError: Redis cannot be reached.
    """
    client = driver.coord.client
    if client is None:
        return None
    with redis_errors(client):
        return _number(client.get(driver.coord.keys.retention))


def _number(raw: Any) -> Optional[float]:
    if raw is None:
        return None
    try:
        return float(raw.decode() if isinstance(raw, bytes) else raw)
    except (TypeError, ValueError):
        return None


def every_s(retention_s: float) -> float:
    """How often the stores without an index of ended runs begin a retention walk."""
    return min(GENERIC_EVERY_S, retention_s / 100)


def for_driver(driver: "Driver", walks: bool) -> Optional[Any]:
    """The retention of ``driver``'s store (``walks``: it is the Redis store sharing the
    coordination's client), or None when ``retention_s`` is 0 (runs are kept for ever)."""
    if driver.settings.retention_s <= 0:
        return None
    return RedisRetention(driver) if walks else StoreRetention(driver)


def _epoch(iso: Any) -> float:
    try:
        return to_epoch(str(iso))
    except (TypeError, ValueError):
        return float("inf")  # no readable end time: never taken for old
