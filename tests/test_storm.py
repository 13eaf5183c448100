"""Duplicate storm: one tick message published 20 times under one task id to three
``celery worker`` subprocesses (prefork, 2 processes each): one transition, each node
once, every other copy counted as a duplicate or as busy."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.dispatch import TICK_TASK
from devkit.cleanup import queue_len, unacked_for
from devkit.procs import Cluster, wait_for, worker_cluster
from tests.conftest import BROKER_URL, FX_URL, STORE_URL, fx_count, make_app, make_settings
from tests.workflows import registry

pytestmark = pytest.mark.timeout(150)
TIMEOUT = 60.0


@pytest.fixture
def three_workers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    settings = make_settings(f"storm{uuid.uuid4().hex[:8]}:", lease_ttl_s=3.0)
    with worker_cluster(settings, tmp_path, request, ["a", "b", "c"], BROKER_URL, STORE_URL, FX_URL) as c:
        yield c


@pytest.mark.parametrize("sleep", [0.0, 0.5])
def test_one_tick_published_twenty_times_to_three_workers(three_workers: Cluster, sleep: float) -> None:
    c = three_workers
    sr = create_scheduled_runtime(app=make_app(c.settings), settings=c.settings, registry=registry,
                                  auto_start=False)
    app, queue, fx = sr.scheduler.app, c.settings.queue, f"{c.settings.key_prefix}fx"
    run_id = sr.driver.start_run("slow", vars={"sleep": sleep, "fx": fx}, dispatch=False)
    before = sr.stats
    for _ in range(20):
        app.send_task(TICK_TASK, args=[run_id], task_id=f"tick-{run_id}", queue=queue)
    done = sr.wait_for(run_id, timeout=TIMEOUT, until=lambda r: r.status == RunStatus.COMPLETED)
    client = redis.Redis.from_url(BROKER_URL)
    wait_for(lambda: queue_len(BROKER_URL, queue) == 0 and not unacked_for(client, [queue]), TIMEOUT,
             "all 20 copies to be consumed", c)
    # Every copy was run by some worker (the three logs together name the task id 20 times).
    wait_for(lambda: sum(p.log().count(f"tick-{run_id}] succeeded") for p in c.procs) == 20, TIMEOUT,
             "20 deliveries to be logged", c)
    after = sr.stats
    assert done.output == {"ok": True}
    assert (fx_count(fx, run_id, "work_started"), fx_count(fx, run_id, "work_done"),
            fx_count(fx, run_id, "finish")) == (1, 1, 1)
    assert after.transitions - before.transitions == 1
    skipped = (after.duplicates - before.duplicates) + (after.lease_busy - before.lease_busy)
    assert skipped >= 19, (before, after)
    workers_used = sum(1 for p in c.procs if f"tick-{run_id}] succeeded" in p.log())
    if sleep:  # one worker holds at most 2 copies (prefetch 1, acks_late) while the first one sleeps
        assert workers_used >= 2, "the storm should reach more than one worker"
    assert all(p.alive() for p in c.procs)
    sr.stop()
