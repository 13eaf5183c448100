"""The driver on real Celery workers (in-process threads) and a real Redis."""

from __future__ import annotations

from typing import Any

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from tests.conftest import fx_count
from tests.workflows import registry

pytestmark = pytest.mark.broker  # (re-run on RabbitMQ, classic and quorum: .ci/run)


@pytest.fixture
def sr(celery_app: Any, settings: Any, worker: Any) -> Any:
    rt = create_scheduled_runtime(app=celery_app, settings=settings, registry=registry, auto_start=False)
    yield rt
    rt.stop()


def test_wait_until_resumes_without_manual_tick(sr: Any, fx: str) -> None:
    run_id, state = sr.run(registry.get("timer"), vars={"delay": 1.0, "fx": fx})
    assert state.status == RunStatus.WAITING
    done = sr.wait_for(run_id, timeout=10, until=lambda r: r.status == RunStatus.COMPLETED)
    assert done.output["woke_at"] >= 0
    assert fx_count(fx, run_id, "done") == 1


def test_event_resumes_through_resume_event(sr: Any) -> None:
    run_id, state = sr.run(registry.get("event"), vars={"key": "go"})
    assert state.status == RunStatus.WAITING and state.waiting.wait_key == "go"
    after = sr.scheduler.resume_event(run_id=run_id, wait_key="go", payload={"v": 7})
    assert after.status == RunStatus.COMPLETED
    assert after.output == {"event": {"v": 7}}


def test_child_resumes_parent(sr: Any) -> None:
    run_id, state = sr.run(registry.get("parent"), vars={"child_delay": 0.3})
    done = sr.wait_for(run_id, timeout=10, until=lambda r: r.status == RunStatus.COMPLETED)
    child = done.output["child"]
    assert child["output"]["until"]


def test_failed_child_resumes_parent_with_success_false(sr: Any) -> None:
    run_id, _ = sr.run(registry.get("parent"), vars={"child": "broken"})
    done = sr.wait_for(run_id, timeout=10, until=lambda r: r.status == RunStatus.COMPLETED)
    assert done.output["child"]["output"]["success"] is False


def test_emit_event_ticks_listeners(sr: Any) -> None:
    listener, state = sr.run(registry.get("listener"), vars={"name": f"n{id(sr)}"})
    assert state.status == RunStatus.WAITING
    sr.run(registry.get("emitter"), vars={"name": f"n{id(sr)}"})
    heard = sr.wait_for(listener, timeout=10, until=lambda r: r.status == RunStatus.COMPLETED)
    assert heard.output["heard"]["payload"] == {"n": 1}


def test_long_run_is_reenqueued_after_max_steps(sr: Any) -> None:
    run_id, _ = sr.run(registry.get("steps"), vars={"n": 350})
    done = sr.wait_for(run_id, timeout=20, until=lambda r: r.status == RunStatus.COMPLETED)
    assert done.output == {"i": 350}


def test_flaky_node_is_retried_then_completes(sr: Any, fx: str) -> None:
    run_id, _ = sr.run(registry.get("flaky"), vars={"fail_times": 2, "fx": fx}, wait=False)
    done = sr.wait_for(run_id, timeout=15, until=lambda r: r.status == RunStatus.COMPLETED)
    assert done.output == {"tries": 3}
    assert sr.stats.tick_errors == 2


def test_workers_build_their_runtime_from_runtime_options(prefix: str, broker_up: None) -> None:
    """A plain worker (no Scheduler in its process) loads registry and effect handlers by path."""
    import time

    from celery.contrib.testing.worker import start_worker

    from abstractruntime_celery.tasks import driver_for
    from tests.conftest import make_app, make_settings

    settings = make_settings(prefix, runtime_options="tests.workflows:runtime_options")
    app = make_app(settings)
    from abstractruntime_celery.testing.kit import stop_promptly

    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False,
                      queues=[settings.queue], loglevel="WARNING") as w:
        app.send_task("abstractruntime.start", args=["tool"], kwargs={"run_id": f"{prefix[:-1]}-tool"},
                      queue=settings.queue)
        driver = driver_for(app)
        deadline = time.monotonic() + 15
        run = None
        while time.monotonic() < deadline:
            run = driver.run_store.load(f"{prefix[:-1]}-tool")
            if run is not None and run.status == RunStatus.COMPLETED:
                break
            time.sleep(0.05)
        stop_promptly(w)
    assert run is not None and run.output == {"tool": {"value": 42}}


def test_the_start_task_creates_and_runs_a_run_on_a_worker(sr: Any, celery_app: Any, settings: Any) -> None:
    """What a web process that only publishes does: one start message per run, no id given
    (the worker makes it up and creates the run in its first write), or an explicit id
    sent twice (one run)."""
    import time

    from abstractruntime_celery.dispatch import START_TASK

    for _ in range(5):
        celery_app.send_task(START_TASK, args=["steps", {"n": 3}], queue=settings.queue)
    celery_app.send_task(START_TASK, args=["timer", {"delay": 0.3}, "mine-1"], queue=settings.queue)
    celery_app.send_task(START_TASK, args=["timer", {"delay": 0.3}, "mine-1"], queue=settings.queue)
    store = sr.driver.run_store
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        runs = store.list_runs(workflow_id="steps", limit=100)
        if len(runs) == 5 and all(r.status == RunStatus.COMPLETED for r in runs):
            break
        time.sleep(0.05)
    assert len(runs) == 5 and all(r.status == RunStatus.COMPLETED and r.output == {"i": 3} for r in runs), runs
    for run in runs:  # each run's ledger is whole, completion record before the terminal one
        keys = [r.get("idempotency_key") for r in sr.get_ledger(run.run_id)]
        assert keys[-2:] == ["system:completion:step", "system:terminal_status:completed"], keys
    mine = sr.wait_for("mine-1", timeout=10, until=lambda r: r.status == RunStatus.COMPLETED)
    assert mine.output["woke_at"] >= 0
    assert len(store.list_runs(workflow_id="timer", limit=100)) == 1
    assert sr.stats.runs_started >= 6 and sr.stats.tick_errors == 0
