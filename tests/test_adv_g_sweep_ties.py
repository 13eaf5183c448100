"""Adversarial: the sweep's cursor over many runs due at the very same ``until``.

A sweep pass goes on from a cursor ``(score, how many members at that score it took)``
(``stores/redis/queries.py: zwalk``; ``sweep.py: _page`` for the other stores). Runs that
share one ``until`` (a batch of reminders all due at 09:00) are ties. The runs a pass
reaches are ticked and leave the ``due`` index before the next sweep, so the next pass,
skipping "the ties already taken" by count, skips as many runs it never read. Those are
reached only after the walk wraps around and goes through every stuck run again.

The guarantee (sweep.py, README): every run the sweep should move is reached within
``ceil(candidates / sweep_batch) + 1`` sweeps, however many runs it cannot move sit in
front (here: paused runs, due earlier). The broker lost every message: the runs were
brought to their wait by a driver whose dispatcher sends nothing, so only sweeps move them.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.dispatch import CeleryDispatcher
from abstractruntime_celery.driver import build
from abstractruntime_celery.sweep import sweep
from tests._adv_g import adv_cluster, make_app
from devkit.procs import Cluster, wait_for
from tests._regress_d import Recorder, wait_drained
from tests.conftest import make_settings
from tests.workflows_adv_g import registry

BATCH = 10
STUCK = 25      # paused runs due first
MOVABLE = 30    # runs due together, after them, at one shared `until`
TIMEOUT = 60.0


def _iso_in(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


def _park(driver: Any, n: int, until: str, fx: str) -> list[str]:
    """n runs of `timer`, ticked here to their wait until ``until`` (nothing is sent)."""
    ids = []
    for _ in range(n):
        run_id = driver.start_run("timer", vars={"until": until, "fx": fx}, dispatch=False)
        driver.tick(run_id, reason="start")
        assert driver.load(run_id).status == RunStatus.WAITING
        ids.append(run_id)
    return ids


def _bound() -> int:
    return math.ceil((STUCK + MOVABLE) / BATCH) + 1


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with adv_cluster(tmp_path, request, sweep_batch=BATCH, timer_horizon_s=300.0, lease_ttl_s=10.0,
                     orphan_grace_s=600.0) as c:
        yield c


@pytest.mark.timeout(300)
def test_runs_due_at_one_shared_until_behind_paused_runs_are_all_reached_within_the_bound(cluster: Cluster) -> None:
    settings = cluster.settings
    fx = f"{settings.key_prefix}fx"
    lost = build(settings, registry, Recorder(), distributed=True)  # the broker loses every message
    stuck = _park(lost, STUCK, _iso_in(3.0), fx)
    for run_id in stuck:
        lost.control.pause(run_id)
    shared = _iso_in(5.0)
    movable = set(_park(lost, MOVABLE, shared, fx))
    wait_for(lambda: datetime.now(timezone.utc).isoformat() > shared, 30, "the shared until to pass")

    cluster.worker("w", concurrency=2)
    app = make_app(settings)
    sweeper = build(settings, registry, CeleryDispatcher(app, settings.queue), distributed=True)
    sweeps, reached, per_sweep = 0, set(), []
    while movable - reached and sweeps < 3 * _bound():
        sweeps += 1
        report = sweep(sweeper, force=True)
        sent = set(report.due_now) & movable
        per_sweep.append((report.read.get("timers"), len(sent)))
        reached |= sent
        wait_for(lambda: all(sweeper.load(r).status == RunStatus.COMPLETED for r in sent), TIMEOUT,
                 "the runs the sweep reached to complete", cluster)
        wait_drained(settings.queue)
    assert not movable - reached, f"{len(movable - reached)} runs never reached in {sweeps} sweeps"
    assert sweeps <= _bound(), (
        f"{MOVABLE} runs due at one until, behind {STUCK} paused runs, with sweep_batch={BATCH}: reached "
        f"in {sweeps} sweeps, bound ceil(candidates/batch)+1 = {_bound()}; (read, moved) per sweep: {per_sweep}")
    for run_id in stuck:  # the paused runs were left alone
        assert sweeper.load(run_id).status == RunStatus.WAITING


@pytest.mark.timeout(300)
def test_embedded_sqlite_poll_once_reaches_runs_due_at_one_shared_until_within_the_bound(
        prefix: str, tmp_path: Path) -> None:
    # Embedded, stopped (auto_start=False): poll_once is the sweep, ticking in the caller, as the
    # seed's. The horizon (1 s) is shorter than the waits: no tick arms a timer of its own.
    settings = make_settings(prefix, store_url=f"sqlite:///{tmp_path / 'runs.db'}", sweep_batch=BATCH,
                             timer_horizon_s=1.0, orphan_grace_s=600.0)
    sr = create_scheduled_runtime(settings=settings, registry=registry, auto_start=False)
    try:
        driver = sr.driver
        stuck = _park(driver, STUCK, _iso_in(3.0), "")
        for run_id in stuck:
            sr.pause_run(run_id)
        shared = _iso_in(5.0)
        movable = set(_park(driver, MOVABLE, shared, ""))
        wait_for(lambda: datetime.now(timezone.utc).isoformat() > shared, 30, "the shared until to pass")
        polls, per_poll = 0, []
        while any(driver.load(r).status != RunStatus.COMPLETED for r in movable) and polls < 3 * _bound():
            polls += 1
            per_poll.append(sr.scheduler.poll_once())
        left = [r for r in movable if driver.load(r).status != RunStatus.COMPLETED]
        assert not left, f"{len(left)} runs not completed after {polls} polls"
        assert polls <= _bound(), (
            f"{MOVABLE} runs due at one until behind {STUCK} paused runs, sweep_batch={BATCH}: completed "
            f"after {polls} poll_once calls, bound {_bound()}; runs moved per poll: {per_poll}")
    finally:
        sr.stop()
