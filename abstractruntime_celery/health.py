"""Is the cluster healthy? The checks behind ``abstractruntime-celery health``.

Each check reads what the system already records, with a round trip or two:
the store answers; the broker answers; the last sweep is recent (the sweep writes
``last_poll_at`` to ``{p}stats`` in the pipeline that ends it, the one write it
makes anyway); and no run's timer is overdue by more than a bound (the ``due``
index, read from its oldest end). A probe (Kubernetes, a load balancer) needs only
the exit code; ``--json`` gives the checks.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

from abstractruntime import RunStatus

from .isotime import from_epoch, to_epoch
from .runstate import paused
from .stores.redis import RedisRunStore
from .walk import START

#: Most overdue candidates one check reads (oldest first).
OVERDUE_SCAN = 1000
#: How many overdue run ids a report names.
NAMED = 10


@dataclass
class Check:
    """One check: its name, whether it passed, and what it saw."""

    name: str
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def store_check(driver: Any) -> Check:
    """The store (and coordination) answers. Raises nothing."""
    try:
        client = driver.coord.client
        if client is not None:
            client.ping()
        else:
            driver.run_store.list_runs(limit=1)
    except Exception as exc:  # noqa: BLE001 - a failing check, not a crash
        return Check("store", False, f"unreachable: {type(exc).__name__}: {exc}")
    return Check("store", True, "answers")


def broker_check(probe: Callable[[], None]) -> Check:
    """The broker answers ``probe`` (a connection). Raises nothing."""
    try:
        probe()
    except Exception as exc:  # noqa: BLE001
        return Check("broker", False, f"unreachable: {exc}")
    return Check("broker", True, "answers")


def sweep_check(driver: Any, max_age_s: float, now: Optional[float] = None) -> Check:
    """The last sweep ended at most ``max_age_s`` ago (none ever recorded: unhealthy). Raises nothing."""
    now = time.time() if now is None else now
    try:
        last = driver.coord.stats.snapshot().last_poll_at
    except Exception as exc:  # noqa: BLE001
        return Check("sweep", False, f"cannot read the stats: {type(exc).__name__}: {exc}")
    # Beat only sends the sweep; a worker on the queue runs it: with no worker there, beat alone
    # never records one.
    who = f"is beat (or a Scheduler) running, and a worker consuming queue {driver.settings.queue!r}?"
    if not last:
        return Check("sweep", False, f"no sweep recorded: {who}", {"last_sweep_at": None})
    try:
        age = now - to_epoch(str(last))
    except ValueError:
        return Check("sweep", False, f"last sweep time unreadable: {last!r}", {"last_sweep_at": last})
    data = {"last_sweep_at": last, "age_s": round(age, 3), "max_age_s": max_age_s}
    if age > max_age_s:
        return Check("sweep", False, f"last sweep {age:.0f}s ago, over {max_age_s:g}s: {who}", data)
    return Check("sweep", True, f"last sweep {age:.1f}s ago", data)


def overdue_check(driver: Any, overdue_s: float, now: Optional[float] = None) -> Check:
    """No unpaused WAITING run's deadline passed more than ``overdue_s`` ago. Raises nothing."""
    now = time.time() if now is None else now
    try:
        overdue = _overdue(driver, now - overdue_s)
    except Exception as exc:  # noqa: BLE001
        return Check("overdue", False, f"cannot read the due index: {type(exc).__name__}: {exc}")
    data = {"count": len(overdue), "overdue_after_s": overdue_s, "runs": [r for r, _ in overdue[:NAMED]]}
    if overdue:
        worst = now - overdue[0][1]
        data["worst_s"] = round(worst, 3)
        return Check("overdue", False, f"{len(overdue)} run(s) overdue by more than {overdue_s:g}s "
                                       f"(the oldest by {worst:.0f}s): are workers consuming the queue?", data)
    return Check("overdue", True, f"no timer overdue by more than {overdue_s:g}s", data)


def _overdue(driver: Any, before: float) -> list[tuple[str, float]]:
    """(run id, due epoch) of unpaused WAITING runs due before ``before``, oldest first."""
    store = driver.run_store
    if isinstance(store, RedisRunStore):
        rows, _ = store.walk(store.keys.due, low=float("-inf"), high=before, after=START, limit=OVERDUE_SCAN,
                             fields=("status", "paused"))
        return [(run_id, score) for run_id, score, (status, is_paused) in rows
                if status == RunStatus.WAITING.value and is_paused != "1"]
    runs = store.list_due_wait_until(now_iso=from_epoch(before), limit=OVERDUE_SCAN)
    found = [(r.run_id, to_epoch(r.waiting.until)) for r in runs
             if r.waiting is not None and r.waiting.until and not paused(r)]
    return sorted(found, key=lambda pair: pair[1])
