"""A write that landed but whose reply was lost (adversarial, round S).

The store's connection is cut right after a command went out (a TCP proxy forwards the
chunk, then closes both sides): the server ran it, the worker sees a ConnectionError.
A start's create (with its lease acquire) and a tick's release pipeline (its save, its
ledger append and the lease release) are cut so. The invariants: exactly one run per
start message, every step committed once (its side effect counted once), the run completes (with the sweep, as beat
would run it), the node side effect at most twice (at least once, README).

Real Redis (a private redis-server behind the proxy), a real in-process Celery worker.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.dispatch import START_TASK
from abstractruntime_celery.scripts import sha_of, source
from abstractruntime_celery.sweep import sweep
from devkit.procs import wait_for
from devkit.proxy import CutProxy
from devkit.redisproc import PrivateRedis
from tests.conftest import BROKER_URL, fx_count
from tests.workflows_adv_s import registry

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 20.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "store", aof=False).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(store: PrivateRedis) -> Iterator[CutProxy]:
    p = CutProxy((store.host, store.port))
    yield p
    p.close()


def _runtime(settings: Any, url: str, **overrides: Any) -> Any:
    from abstractruntime_celery.app import make_app as plain_app
    from abstractruntime_celery.tasks import install

    settings = replace(settings, store_url=url, retry_backoff_s=0.1, retry_backoff_max_s=0.2, lease_ttl_s=2.0,
                       orphan_grace_s=0.5, **overrides)
    app = install(plain_app(BROKER_URL, name=f"arc-{settings.queue}", config_module=None),
                  registry=registry, settings=settings)
    return app, create_scheduled_runtime(app=app, settings=settings, registry=registry, auto_start=False)


def _settled(sr: Any, run_id: str) -> Any:
    run = sr.driver.run_store.load(run_id)
    if run is not None and run.status == RunStatus.COMPLETED:
        return run
    sweep(sr.driver, force=True)  # what beat does, once per sweep_interval_s
    return None


@pytest.mark.parametrize("cut", ["create", "first-save", "release"])
def test_a_write_whose_reply_was_lost_makes_one_run_and_loses_no_step(
        settings: Any, store: PrivateRedis, proxy: CutProxy, fx: str, cut: str) -> None:
    from celery.contrib.testing.worker import start_worker

    app, worker_sr = _runtime(settings, proxy.url(0))
    _, sr = _runtime(settings, store.db_url(0))  # the caller, straight to the store
    task_id = f"start-{uuid.uuid4().hex}"
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, queues=[settings.queue],
                          shutdown_timeout=10, loglevel="WARNING"):
            worker_sr.driver.run_store.load("warm-up")  # (the worker's pool connects through the proxy)
            if cut == "create":
                proxy.cut_after('"drop_lease"', task_id)
            elif cut == "first-save":
                proxy.cut_after('"mode": "save"', task_id)  # (the first node's commit)
            else:  # the last save (COMPLETED), its ledger append and the lease release: one MULTI
                proxy.cut_after('"mode": "save"', '"status": "completed"', sha_of(source("lease_release")))
            app.send_task(START_TASK, args=["as-steps", {"n": 3, "fx": fx}], task_id=task_id,
                          queue=settings.queue)
            done = wait_for(lambda: _settled(sr, task_id), TIMEOUT, "the started run to complete")
        assert proxy.cuts == 1
        assert done.output == {"i": 3}
        assert [r.run_id for r in sr.driver.run_store.list_runs(limit=10)] == [task_id]
        ledger = [str(r.get("status", "")).lower() for r in sr.get_ledger(task_id)]
        assert ledger == ["completed", "completed"], ledger  # (as the seed's Runtime records this loop)
        steps = fx_count(fx, task_id, "step")
        assert steps == 3, steps  # the cut write landed: nothing it committed runs again
    finally:
        sr.stop()
        worker_sr.stop()


def test_a_dropped_connection_on_a_commit_is_not_counted_as_the_nodes_failure(
        settings: Any, store: PrivateRedis, proxy: CutProxy, fx: str) -> None:
    """``tick_max_attempts=1``: one node failure fails the run. No node fails here: the
    connection of step 1's commit is cut after the send (the commit landed). It was counted
    as the node's failure (``tick._step`` counts whatever ``Runtime.tick`` raises, and the
    commit flush raised a raw ConnectionError): the run was FAILED, "Tick failed 1 times;
    last error: ConnectionError: Connection closed by server." (two runs in three). Now the
    flush raises StoreUnavailableError, which is not counted: the start task is retried."""
    from celery.contrib.testing.worker import start_worker

    app, worker_sr = _runtime(settings, proxy.url(0), tick_max_attempts=1)
    _, sr = _runtime(settings, store.db_url(0), tick_max_attempts=1)
    task_id = f"start-{uuid.uuid4().hex}"
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, queues=[settings.queue],
                          shutdown_timeout=10, loglevel="WARNING"):
            worker_sr.driver.run_store.load("warm-up")
            proxy.cut_after('"mode": "save"', task_id)
            app.send_task(START_TASK, args=["as-steps", {"n": 3, "fx": fx}], task_id=task_id,
                          queue=settings.queue)
            ended = wait_for(lambda: (lambda r: r if r is not None and r.status in (
                RunStatus.COMPLETED, RunStatus.FAILED) else None)(_settled(sr, task_id) or
                                                                  sr.driver.run_store.load(task_id)),
                TIMEOUT, "the run to end")
        assert proxy.cuts == 1
        assert ended.status == RunStatus.COMPLETED, ended.error
    finally:
        sr.stop()
        worker_sr.stop()
