"""Adversarial timer scenarios that HELD (kept as coverage; not covered elsewhere as such):

* timer messages held (ETA) by a worker that is SIGKILLed: Redis gives them back only
  after ``visibility_timeout`` (1 h) and the timer notes stay; the sweep's due pass still
  wakes every run, none before its ``until``;
* a run paused before its deadline, its timer message delivered (and consumed) while it
  was paused, then resumed after the deadline with the resume's tick lost: the sweep wakes
  it, once.

Real ``celery worker`` (prefork) and ``beat`` subprocesses.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Iterator

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.driver import build
from tests._adv_g import adv_cluster, make_app
from devkit.cleanup import unacked_for
from devkit.procs import Cluster, wait_for
from tests._regress_d import Recorder
from tests.conftest import BROKER_URL, fx_count
from tests.workflows_adv_g import registry

TIMEOUT = 60.0
RUNS = 8


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with adv_cluster(tmp_path, request, lease_ttl_s=5.0, orphan_grace_s=2.0) as c:
        yield c


def _woke_on_time(state: object) -> bool:
    out = state.output  # type: ignore[attr-defined]
    return out["woke_at"] >= datetime.fromisoformat(out["until"]).timestamp()


@pytest.mark.timeout(180)
def test_timers_held_by_a_sigkilled_worker_still_fire_once_and_never_early(cluster: Cluster) -> None:
    import redis

    settings = cluster.settings
    fx = f"{settings.key_prefix}fx"
    w1 = cluster.worker("w1", concurrency=1)
    sr = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry, auto_start=False)
    ids = [sr.run(registry.get("timer"), vars={"delay": 6.0, "fx": fx}, timeout=TIMEOUT)[0] for _ in range(RUNS)]
    assert all(sr.get_state(r).status == RunStatus.WAITING for r in ids)
    broker = redis.Redis.from_url(BROKER_URL)
    wait_for(lambda: len(unacked_for(broker, [settings.queue])) >= RUNS, TIMEOUT, "w1 to hold every timer", cluster)
    w1.kill()  # SIGKILL: its held ETA messages stay unacked for an hour
    cluster.worker("w2", concurrency=2)
    cluster.beat()
    for run_id in ids:
        state = sr.wait_for(run_id, timeout=TIMEOUT, until=lambda r: r.status != RunStatus.WAITING)
        assert state.status == RunStatus.COMPLETED and _woke_on_time(state)
        assert fx_count(fx, run_id, "done") == 1


@pytest.mark.timeout(180)
def test_a_run_paused_past_its_deadline_and_resumed_with_the_message_lost_wakes_once(cluster: Cluster) -> None:
    settings = cluster.settings
    fx = f"{settings.key_prefix}fx"
    cluster.worker("w", concurrency=2)
    sr = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry, auto_start=False)
    run_id, state = sr.run(registry.get("timer"), vars={"delay": 2.0, "fx": fx}, timeout=TIMEOUT)
    assert state.status == RunStatus.WAITING
    sr.pause_run(run_id)
    early = sr.stats.early + sr.stats.duplicates
    # The timer message arrives while the run is paused (a no-op) and is consumed.
    wait_for(lambda: sr.stats.early + sr.stats.duplicates > early, TIMEOUT, "the timer tick while paused", cluster)
    assert sr.get_state(run_id).status == RunStatus.WAITING and fx_count(fx, run_id, "done") == 0
    lost = build(settings, registry, Recorder(), distributed=True)
    lost.control.resume(run_id)  # its tick is lost
    cluster.beat()
    done = sr.wait_for(run_id, timeout=TIMEOUT, until=lambda r: r.status != RunStatus.WAITING)
    assert done.status == RunStatus.COMPLETED and _woke_on_time(done) and fx_count(fx, run_id, "done") == 1
