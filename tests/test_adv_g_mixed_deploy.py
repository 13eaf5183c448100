"""Adversarial: a run whose workflow is registered on some workers only (a rolling deploy).

README: "A run whose workflow this worker does not know is left as it is, counted in
``stats.unknown_workflow`` ... and retried by the sweep, so it proceeds once a worker with
the workflow is deployed. After ``unknown_workflow_grace_s`` (default one day) it is marked
FAILED." The first worker that does not know the workflow notes *when it first saw the run*
(``{p}unknown:<id>``, kept 30 days) and nothing clears that note when a worker that knows
the workflow ticks the run afterwards. So a run that capable workers have driven for longer
than the grace is failed, at once, by the next tick that lands on a stale worker, though
its workflow is deployed and it was moving all along.

Real ``celery worker`` subprocesses: worker B of the old deploy (no ``ag-two-events``) and
worker A of the new one, taking turns on one queue.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.dispatch import CeleryDispatcher
from abstractruntime_celery.driver import build
from tests._adv_g import REGISTRY_WITHOUT_TWO_EVENTS, adv_cluster, make_app, with_registry
from devkit.procs import Cluster, wait_for
from tests._regress_d import wait_drained
from tests.conftest import fx_count
from tests.workflows_adv_g import registry

TIMEOUT = 60.0
GRACE_S = 8.0


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with adv_cluster(tmp_path, request, unknown_workflow_grace_s=GRACE_S, orphan_grace_s=600.0,
                     lease_ttl_s=10.0) as c:
        yield c


@pytest.mark.timeout(240)
def test_a_run_driven_by_workers_that_know_its_workflow_is_not_failed_by_a_stale_worker_after_the_grace(
        cluster: Cluster) -> None:
    settings = cluster.settings
    fx = f"{settings.key_prefix}fx"
    old = with_registry(cluster, REGISTRY_WITHOUT_TWO_EVENTS)
    driver = build(settings, registry, CeleryDispatcher(make_app(settings), settings.queue), distributed=True)

    # 1. The old worker gets the run's first tick: it leaves the run as it is.
    b = old.worker("b", concurrency=1)
    run_id = driver.start_run("ag-two-events", vars={"fx": fx})
    wait_for(lambda: driver.coord.stats.snapshot().unknown_workflow >= 1, TIMEOUT, "B to see the run", cluster)
    first_seen = time.time()
    wait_drained(settings.queue)
    b.stop()
    assert driver.load(run_id).status == RunStatus.RUNNING

    # 2. The new deploy drives it: it reaches k1 at once, and (after the grace) takes an event
    # and reaches k2.
    a = cluster.worker("a", concurrency=1)
    driver.send(run_id, "tick")
    wait_for(lambda: fx_count(fx, run_id, "waiting_k1") == 1, TIMEOUT, "A to bring the run to k1", cluster)
    wait_for(lambda: time.time() - first_seen > GRACE_S + 1, GRACE_S + 10, "the grace to pass")
    driver.accept_event(run_id, "k1", {"n": 1})
    wait_for(lambda: fx_count(fx, run_id, "waiting_k2") == 1, TIMEOUT, "A to bring the run to k2", cluster)
    moved_at = time.time()
    wait_drained(settings.queue)
    a.stop()

    # 3. Soon after (well within the grace), one tick lands on a worker of the old deploy again.
    unknown = driver.coord.stats.snapshot().unknown_workflow
    b2 = old.worker("b", concurrency=1)
    event = driver.accept_event(run_id, "k2", {"n": 2})
    wait_for(lambda: driver.coord.stats.snapshot().unknown_workflow > unknown, TIMEOUT, "B to see it again", cluster)
    seen_again = time.time() - moved_at
    wait_drained(settings.queue)
    b2.stop()
    run = driver.load(run_id)
    assert run.status == RunStatus.WAITING, (
        f"run {run_id}, moved by a worker that knows its workflow {seen_again:.0f}s before "
        f"(grace {GRACE_S:g}s), was {run.status.value} by a worker that does not: {run.error}")

    # 4. The new deploy takes the event and completes the run.
    cluster.worker("a", concurrency=1)
    driver.send(run_id, "tick")
    done = driver.wait_for(run_id, timeout=TIMEOUT, event=event,
                           until=lambda r: r.status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED))
    assert done.status == RunStatus.COMPLETED and fx_count(fx, run_id, "end") == 1


@pytest.mark.timeout(180)
def test_a_start_message_that_lands_on_a_worker_of_the_old_deploy_still_makes_its_run(cluster: Cluster) -> None:
    import uuid

    from abstractruntime_celery.dispatch import START_TASK

    settings = cluster.settings
    fx = f"{settings.key_prefix}fx"
    app = make_app(settings)
    driver = build(settings, registry, CeleryDispatcher(app, settings.queue), distributed=True)
    b = with_registry(cluster, REGISTRY_WITHOUT_TWO_EVENTS).worker("b", concurrency=1)
    run_id = uuid.uuid4().hex
    app.send_task(START_TASK, args=["ag-two-events", {"fx": fx}], task_id=run_id, queue=settings.queue)
    wait_for(lambda: "abstractruntime.start[" + run_id in b.log()
             and any(word in b.log() for word in ("raised", "succeeded", "retry:")),
             TIMEOUT, "B to take the start", cluster)
    b.stop()  # (a start B sends again for later, or holds, goes back to the queue)
    cluster.worker("a", concurrency=1)  # the new deploy, and the sweep
    cluster.beat()
    deadline = time.monotonic() + 30.0  # far more than a start and a few sweeps take
    while time.monotonic() < deadline and fx_count(fx, run_id, "waiting_k1") == 0:
        time.sleep(0.2)
    assert driver.run_store.load(run_id) is not None and fx_count(fx, run_id, "waiting_k1") == 1, (
        f"the start message of run {run_id} was taken by a worker without its workflow; 30 s after a worker "
        f"with it came up, the run does not exist")
