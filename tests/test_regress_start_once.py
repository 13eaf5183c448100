"""Regression: one start message could create two runs.

The ``abstractruntime.start`` task without a ``run_id`` made up a new id on every
delivery. With ``task_reject_on_worker_lost``, a pool child killed mid-task gives its
message back at once, and the second delivery created a second run. A start message
must create at most one run however often it is delivered (the node may run again:
at least once), and a start delivered again with an explicit ``run_id`` must not count
a second ``runs_started``.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery.dispatch import START_TASK
from abstractruntime_celery.driver import build
from devkit.procs import Cluster, wait_for
from tests._regress_d import in_process_worker, make_app, regress_cluster, wait_drained
from tests.conftest import FX_URL, fx_count, make_settings
from tests.workflows_regress_d import registry

TIMEOUT = 60.0


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with regress_cluster(tmp_path, request) as c:
        yield c


@pytest.mark.timeout(180)
def test_a_start_message_redelivered_after_its_pool_child_was_killed_makes_one_run(cluster: Cluster) -> None:
    worker = cluster.worker("w", concurrency=1)
    cluster.beat()  # the sweep recovers the run the killed child held
    settings = cluster.settings
    fx = f"{settings.key_prefix}fx"
    driver = build(settings, registry)
    app = make_app(settings)
    app.send_task(START_TASK, args=["rd-pid", {"fx": fx, "sleep": 3}], queue=settings.queue)

    pids = redis.Redis.from_url(FX_URL, decode_responses=True)
    # (the node records its pid, then counts "started": wait for both, or the kill may land between)
    wait_for(lambda: pids.hget(fx, "pid:started"), TIMEOUT, "the node to start", cluster)
    first = int(pids.lindex(f"{fx}:pids", 0))
    assert first != worker.pid, "the node must run in a pool child, not in the worker's main process"
    os.kill(first, signal.SIGKILL)  # the pool child only: the worker gives the message back at once

    def completed() -> Any:
        runs = driver.run_store.list_runs(workflow_id="rd-pid", limit=100)
        return [r for r in runs if r.status == RunStatus.COMPLETED]

    wait_for(completed, TIMEOUT, "a run of rd-pid to complete", cluster)
    wait_drained(settings.queue)
    runs = driver.run_store.list_runs(workflow_id="rd-pid", limit=100)
    assert [r.status for r in runs] == [RunStatus.COMPLETED], \
        f"one start message made {len(runs)} runs: {[(r.run_id, r.status.value) for r in runs]}"
    # At least once: the killed attempt ran the node without finishing it; it ran again, once.
    counts = redis.Redis.from_url(FX_URL, decode_responses=True).hgetall(fx)
    assert int(counts.get("pid:started", 0)) >= 2 and int(counts.get("pid:finished", 0)) == 1, counts
    assert int(pids.llen(f"{fx}:pids")) == int(counts["pid:started"])
    assert worker.alive()


@pytest.mark.timeout(120)
def test_a_start_message_with_a_run_id_delivered_twice_counts_one_run_started(prefix: str) -> None:
    settings = make_settings(prefix)
    fx = f"{prefix}fx"
    app = make_app(settings)
    driver = build(settings, registry)
    run_id = f"once-{uuid.uuid4().hex}"
    try:
        with in_process_worker(app, settings):
            app.send_task(START_TASK, args=["rd-quick", {"fx": fx}, run_id], queue=settings.queue)
            wait_for(lambda: getattr(driver.run_store.load(run_id), "status", None) == RunStatus.COMPLETED,
                     TIMEOUT, f"run {run_id} to complete")
            wait_drained(settings.queue)
            seen = driver.coord.stats.snapshot().duplicates
            app.send_task(START_TASK, args=["rd-quick", {"fx": fx}, run_id], queue=settings.queue)  # again
            # the second delivery found its run ended: counted as a duplicate tick
            wait_for(lambda: driver.coord.stats.snapshot().duplicates > seen, TIMEOUT, "the second delivery")
            wait_drained(settings.queue)
        stats = driver.coord.stats.snapshot()
        assert stats.runs_started == 1, f"runs_started is {stats.runs_started} for one run started twice"
        assert fx_count(fx, run_id, "ran") == 1
        assert [r.run_id for r in driver.run_store.list_runs(workflow_id="rd-quick")] == [run_id]
    finally:
        redis.Redis.from_url(FX_URL).delete(fx)
