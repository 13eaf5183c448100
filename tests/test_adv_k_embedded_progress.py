"""Held (coverage), embedded mode after the round-J fixes: a failing node's retries still make
progress, whatever drives the scheduler, and a node that always fails still ends FAILED at
``tick_max_attempts`` (the early-retry hold must not back a run off forever).

* started: a node failing twice then passing reaches its wait, with stop()/start() between;
* stopped, driven by ``poll_once`` alone (the held retry is held again until due, then runs);
* started: an always-failing node ends FAILED after exactly ``tick_max_attempts`` tries.
"""

from __future__ import annotations

import time

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from tests.conftest import fx_count, make_settings
from tests.workflows_adv_j import registry

pytestmark = pytest.mark.timeout(60)


def _runtime(prefix: str, auto_start: bool, attempts: int = 5):  # type: ignore[no-untyped-def]
    settings = make_settings(prefix, store_url="memory://", retry_backoff_s=0.3, retry_backoff_max_s=1.0,
                             retry_jitter=False, tick_max_attempts=attempts)
    return create_scheduled_runtime(registry=registry, settings=settings, auto_start=auto_start,
                                    poll_interval_s=0.2)


def _until(check, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_started_with_a_stop_and_start_in_the_backoff_reaches_the_wait(prefix: str) -> None:
    sr = _runtime(prefix, auto_start=True)
    fx = f"{prefix}fx"
    try:
        run_id = sr.start(workflow=registry.get("ai-fail-then-wait"), vars={"fx": fx, "fail_times": 2})
        assert _until(lambda: fx_count(fx, run_id, "tries") >= 1)
        sr.scheduler.stop()
        sr.scheduler.start()
        assert _until(lambda: sr.get_state(run_id).status == RunStatus.WAITING)
        assert fx_count(fx, run_id, "tries") == 3
    finally:
        sr.scheduler.stop()


def test_stopped_poll_once_alone_reaches_the_wait(prefix: str) -> None:
    sr = _runtime(prefix, auto_start=False)
    fx = f"{prefix}fx"
    run_id = sr.start(workflow=registry.get("ai-fail-then-wait"), vars={"fx": fx, "fail_times": 2})

    def polled() -> bool:
        sr.scheduler.poll_once()
        return sr.get_state(run_id).status == RunStatus.WAITING

    assert _until(polled), f"tries={fx_count(fx, run_id, 'tries')} state={sr.get_state(run_id).status}"
    assert fx_count(fx, run_id, "tries") == 3


def test_an_always_failing_node_ends_failed_at_tick_max_attempts(prefix: str) -> None:
    sr = _runtime(prefix, auto_start=True, attempts=3)
    fx = f"{prefix}fx"
    try:
        run_id = sr.start(workflow=registry.get("ai-fail-then-wait"), vars={"fx": fx})
        assert _until(lambda: sr.get_state(run_id).status == RunStatus.FAILED)
        time.sleep(0.5)
        assert fx_count(fx, run_id, "tries") == 3
    finally:
        sr.scheduler.stop()
