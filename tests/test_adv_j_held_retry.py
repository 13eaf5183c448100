"""Adversarial: embedded, a retry held by the stopped in-process dispatcher loses its ETA,
and the retry is exempt from the backoff by its reason alone. So ``Scheduler.poll_once`` (the
seed's way to drive an embedded scheduler that is not started) runs a failing node again at
every call, and a few calls in a row use up ``tick_max_attempts``: a node down for a 30 s
backoff fails its run in milliseconds. ``Scheduler.stop()`` then ``start()`` does the same
to a retry the timer heap held: it is submitted at once.

README ("A failing node"): "retried with backoff (``retry_backoff_s`` doubling ...)", "other
ticks ... leave the run alone until its retry is due".

At fault: dispatch.py ``LocalDispatcher.send`` (while stopped, ``_held`` keeps
``(run, reason, message id)`` and drops ``eta``) and ``LocalDispatcher.stop`` (the heap's
entries go to ``_held`` without their time); scheduler.py ``Scheduler.poll_once`` ticks every
held entry at once; tick.py ``Ticker._backing_off`` lets any tick with reason ``retry`` step,
whatever the clock says of the backoff note it has just read.
"""

from __future__ import annotations

import time

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.scheduler import Scheduler
from tests.conftest import STORE_URL, fx_count, make_settings
from tests.workflows_adv_j import registry

pytestmark = pytest.mark.timeout(60)


def _scheduler(prefix: str, store_url: str) -> Scheduler:
    settings = make_settings(prefix, store_url=store_url, retry_backoff_s=30.0, retry_backoff_max_s=60.0,
                             retry_jitter=False, tick_max_attempts=3)
    return Scheduler(runtime=None, registry=registry, settings=settings)


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_poll_once_does_not_run_a_failing_node_before_its_backoff(store: str, prefix: str) -> None:
    sch = _scheduler(prefix, "memory://" if store == "memory" else STORE_URL)
    fx = f"{prefix}fx"
    run_id = sch.driver.start_run("ai-fail-then-wait", vars={"fx": fx})  # held: the scheduler is not started
    for _ in range(4):
        sch.poll_once()
    tries = fx_count(fx, run_id, "tries")
    state = sch.driver.load(run_id)
    assert tries == 1 and state.status == RunStatus.RUNNING, (
        f"4 poll_once calls within the 30 s backoff ran the node {tries} times; the run is "
        f"{state.status.value} ({state.error})")


def test_stop_then_start_does_not_run_a_held_retry_early(prefix: str) -> None:
    sch = _scheduler(prefix, "memory://")
    sch.start()
    try:
        fx = f"{prefix}fx"
        run_id = sch.driver.start_run("ai-fail-then-wait", vars={"fx": fx})
        deadline = time.monotonic() + 20
        while fx_count(fx, run_id, "tries") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fx_count(fx, run_id, "tries") == 1
        time.sleep(0.3)  # the failing tick has sent its retry (30 s ahead) to the timer heap
    finally:
        sch.stop()
    sch.start()  # a restart, well within the backoff
    try:
        time.sleep(1.5)
    finally:
        sch.stop()
    tries = fx_count(fx, run_id, "tries")
    assert tries == 1, f"the node ran {tries} times within its 30 s backoff after a stop/start"


def test_held_a_started_embedded_scheduler_waits_out_the_backoff(prefix: str) -> None:
    """Held: started (the timer heap keeps the ETA), events and poll_once within the backoff do
    not run the node again."""
    sch = _scheduler(prefix, "memory://")
    sch.start()
    try:
        fx = f"{prefix}fx"
        run_id = sch.driver.start_run("ai-fail-then-wait", vars={"fx": fx})
        deadline = time.monotonic() + 20
        while fx_count(fx, run_id, "tries") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        for n in range(2):
            sch.resume_event(run_id=run_id, wait_key="later", payload={"n": n}, wait=False)
            sch.poll_once()
        time.sleep(0.5)
        assert fx_count(fx, run_id, "tries") == 1
        assert sch.driver.load(run_id).status == RunStatus.RUNNING
    finally:
        sch.stop()
