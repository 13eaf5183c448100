"""Adversarial: a start message delivered twice while its first delivery is still running.

A duplicate delivery must be a no-op (README: "Duplicates and early deliveries are no-ops,
counted in stats.duplicates, stats.early and stats.lease_busy"). The second copy of a start
message finds the run's lease held by the first; it reserves the lease, its queued acquire
is refused, and the tick path takes that for a *lost* lease: it counts a failed attempt
against the run, reports "lease lost mid-tick" in stats.errors and to ``on_run_failed``.
The first delivery created the run, so it never clears that attempt: one real node error
later the run is marked FAILED with retries left.

Real ``celery worker`` (prefork, two pool processes): both copies are taken at once.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.dispatch import START_TASK
from abstractruntime_celery.driver import build
from tests._adv_g import adv_cluster, make_app
from devkit.procs import Cluster, wait_for
from tests._regress_d import wait_drained
from tests.conftest import fx_count
from tests.workflows_adv_g import registry

TIMEOUT = 60.0
ENDED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    # Two failing ticks in a row fail a run: a node that fails once must still complete.
    with adv_cluster(tmp_path, request, tick_max_attempts=2, retry_backoff_s=0.2, retry_jitter=False,
                     lease_ttl_s=10.0) as c:
        yield c


def _start_twice_at_once(cluster: Cluster) -> tuple[str, str]:
    cluster.worker("w", concurrency=2)
    settings = cluster.settings
    fx = f"{settings.key_prefix}fx"
    app = make_app(settings)
    task_id = uuid.uuid4().hex  # both copies carry it: the run's id
    for _ in range(2):
        app.send_task(START_TASK, args=["ag-slow-flaky", {"fx": fx, "sleep": 3.0, "fail_times": 1}],
                      task_id=task_id, queue=settings.queue)
    return task_id, fx


@pytest.mark.timeout(180)
def test_a_start_message_delivered_twice_at_once_still_gives_its_node_every_retry(cluster: Cluster) -> None:
    run_id, fx = _start_twice_at_once(cluster)
    driver = build(cluster.settings, registry)
    run = wait_for(lambda: (r := driver.run_store.load(run_id)) is not None and r.status in ENDED and r,
                   TIMEOUT, "the run to end", cluster)
    wait_drained(cluster.settings.queue)
    # The flaky node failed once (attempt 1 of 2) and then succeeded: the run completes.
    assert run.status == RunStatus.COMPLETED, (
        f"run {run_id} ended {run.status.value} ({run.error}); flaky tries: {fx_count(fx, run_id, 'tries')}; "
        f"stats.errors: {driver.coord.stats.snapshot().errors}")
    assert fx_count(fx, run_id, "tries") == 2


@pytest.mark.timeout(180)
def test_a_start_message_delivered_twice_at_once_is_counted_as_a_duplicate_not_as_a_lost_lease(
        cluster: Cluster) -> None:
    run_id, fx = _start_twice_at_once(cluster)
    driver = build(cluster.settings, registry)
    wait_for(lambda: fx_count(fx, run_id, "slow_done") >= 1, TIMEOUT, "the slow node to finish", cluster)
    wait_for(lambda: (r := driver.run_store.load(run_id)) is not None and r.status in ENDED,
             TIMEOUT, "the run to end", cluster)
    wait_drained(cluster.settings.queue)
    stats = driver.coord.stats.snapshot()
    assert fx_count(fx, run_id, "slow_started") == 1, "the duplicate ran the node a second time"
    assert stats.runs_started == 1
    lost = [e for e in stats.errors if "lease lost" in e]
    assert stats.lease_lost == 0 and not lost, (
        f"a duplicate delivery was reported as a lost lease: lease_lost={stats.lease_lost}, errors={lost}")
