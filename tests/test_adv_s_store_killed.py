"""The store's Redis killed (SIGKILL) in the middle of a tick, then started again
(adversarial, round S).

A node of a started run kills the store's redis-server while it runs (after its lease was
taken and the previous node committed, before its own commit); a thread starts it again
half a second later, with its AOF (``appendfsync always``). The tick's writes meet the
store down; the start or tick message is retried (same task id). Invariants: one run, it
completes once the store is back (with the sweep, as beat runs it), the killed node runs
at most twice and no committed node again.

Real Redis (a private redis-server), a real in-process Celery worker on the shared broker.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.dispatch import START_TASK
from abstractruntime_celery.sweep import sweep
from devkit.procs import wait_for
from devkit.redisproc import PrivateRedis
from tests.conftest import BROKER_URL, fx_count
from tests.workflows_adv_s import HOOKS, registry

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 25.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "store", aof=True).start()
    try:
        yield server
    finally:
        server.stop()


def _runtime(settings: Any, url: str, **overrides: Any) -> Any:
    from abstractruntime_celery.app import make_app as plain_app
    from abstractruntime_celery.tasks import install

    settings = replace(settings, store_url=url, retry_backoff_s=0.1, retry_backoff_max_s=0.3, lease_ttl_s=2.0,
                       orphan_grace_s=0.5, **overrides)
    app = install(plain_app(BROKER_URL, name=f"arc-{settings.queue}", config_module=None),
                  registry=registry, settings=settings)
    return app, create_scheduled_runtime(app=app, settings=settings, registry=registry, auto_start=False)


def _settled(sr: Any, run_id: str) -> Any:
    try:
        run = sr.driver.run_store.load(run_id)
        if run is not None and run.status == RunStatus.COMPLETED:
            return run
        sweep(sr.driver, force=True)  # what beat does, once per sweep_interval_s
    except Exception:  # noqa: BLE001 - the store is still down: poll again
        return None
    return None


@pytest.mark.parametrize("via", ["start", "tick"])
def test_a_store_killed_while_a_node_runs_loses_no_run_and_runs_no_committed_node_again(
        settings: Any, store: PrivateRedis, fx: str, via: str) -> None:
    from celery.contrib.testing.worker import start_worker

    app, sr = _runtime(settings, store.db_url(0))
    run_id = f"start-{uuid.uuid4().hex}" if via == "start" else uuid.uuid4().hex
    restarted = threading.Event()

    def kill_at_step_two(step: int) -> None:
        if step == 2 and not restarted.is_set():
            store.kill()
            timer = threading.Timer(0.5, lambda: (store.start(), restarted.set()))
            timer.daemon = True
            timer.start()

    HOOKS[run_id] = kill_at_step_two
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, queues=[settings.queue],
                          shutdown_timeout=10, loglevel="WARNING"):
            if via == "start":
                app.send_task(START_TASK, args=["as-steps", {"n": 3, "fx": fx}], task_id=run_id,
                              queue=settings.queue)
            else:
                sr.start(workflow=registry.get("as-steps"), vars={"n": 3, "fx": fx}, run_id=run_id)
            wait_for(restarted.is_set, TIMEOUT, "the store to be killed and started again")
            done = wait_for(lambda: _settled(sr, run_id), TIMEOUT, "the run to complete")
        assert done.output == {"i": 3}
        assert [r.run_id for r in sr.driver.run_store.list_runs(limit=10)] == [run_id]
        assert fx_count(fx, run_id, "step") == 4  # step 2 twice (its commit never landed), 1 and 3 once
    finally:
        HOOKS.pop(run_id, None)
        sr.stop()


def test_a_store_blip_while_a_node_runs_is_not_counted_as_the_nodes_failure(
        settings: Any, store: PrivateRedis, fx: str) -> None:
    """``tick_max_attempts=1``: a node that fails once fails its run. Here no node fails:
    the store is killed while step 2 runs and is back half a second later."""
    from celery.contrib.testing.worker import start_worker

    app, sr = _runtime(settings, store.db_url(0), tick_max_attempts=1)
    run_id = uuid.uuid4().hex
    restarted = threading.Event()

    def kill_at_step_two(step: int) -> None:
        if step == 2 and not restarted.is_set():
            store.kill()
            timer = threading.Timer(0.5, lambda: (store.start(), restarted.set()))
            timer.daemon = True
            timer.start()

    HOOKS[run_id] = kill_at_step_two
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, queues=[settings.queue],
                          shutdown_timeout=10, loglevel="WARNING"):
            sr.start(workflow=registry.get("as-steps"), vars={"n": 3, "fx": fx}, run_id=run_id)
            wait_for(restarted.is_set, TIMEOUT, "the store to be killed and started again")
            ended = wait_for(lambda: (lambda r: r if r is not None and r.status in (
                RunStatus.COMPLETED, RunStatus.FAILED) else None)(_settled(sr, run_id) or _load(sr, run_id)),
                TIMEOUT, "the run to end")
        assert ended.status == RunStatus.COMPLETED, ended.error
    finally:
        HOOKS.pop(run_id, None)
        sr.stop()


def _load(sr: Any, run_id: str) -> Any:
    try:
        return sr.driver.run_store.load(run_id)
    except Exception:  # noqa: BLE001 - the store is still down
        return None
