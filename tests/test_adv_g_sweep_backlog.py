"""Adversarial: the beat sweep behind a steady backlog.

``install`` schedules the sweep on the same queue as the ticks, with
``expires=sweep_interval_s``. When the queue's latency stays above ``sweep_interval_s``
(a fleet running at capacity), every sweep message has expired by the time a worker takes
it: no sweep ever runs. Everything only the sweep does stops with it: a wait longer than
``timer_horizon_s`` is armed only by the sweep, so it never fires, however long the run
waits; orphans of killed workers are never recovered; lost events never resent.

Real ``celery worker`` (prefork, one pool process) and ``beat`` (a sweep a second). Six
looping runs (0.3 s a step, one step per tick) keep a round of the queue near 1.8 s. A
timer run waits 5 s with a 2 s horizon: its own tick leaves the wait to the sweep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from tests._adv_g import adv_cluster, make_app
from devkit.procs import Cluster
from tests.workflows_adv_g import registry

LOOPS = 6
TIMEOUT = 60.0


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with adv_cluster(tmp_path, request, tick_max_steps=1, sweep_interval_s=1.0, timer_horizon_s=2.0,
                     orphan_grace_s=600.0, lease_ttl_s=10.0) as c:
        yield c


@pytest.mark.timeout(180)
def test_a_wait_beyond_the_horizon_fires_while_the_queue_stays_busy(cluster: Cluster) -> None:
    settings = cluster.settings
    cluster.worker("w", concurrency=1)
    cluster.beat()
    sr = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry, auto_start=False)
    loops = [sr.run(registry.get("ag-loop"), vars={"n": 1000, "sleep": 0.3}, wait=False)[0] for _ in range(LOOPS)]
    try:
        timer_id, state = sr.run(registry.get("timer"), vars={"delay": 5.0}, timeout=TIMEOUT)
        assert state.status == RunStatus.WAITING
        try:
            done = sr.wait_for(timer_id, timeout=TIMEOUT, until=lambda r: r.status != RunStatus.WAITING)
        except TimeoutError:
            done = sr.get_state(timer_id)
        stats = sr.stats
        assert done.status == RunStatus.COMPLETED, (
            f"a 5 s wait (horizon 2 s) still {done.status.value} after {TIMEOUT:.0f}s while the queue was busy; "
            f"sweeps run: {stats.sweeps}, timers armed: {stats.timers_armed}")
    finally:
        for run_id in loops:
            sr.cancel_run(run_id)
