"""A run that waits again on the same deadline after its timer message fired while it was
RUNNING gets a timer again (item 11, "suspected"; branch regress-e).

Suspected before: the timer book remembers the ``until`` a timer message is in flight for,
and nothing forgot it when that message was delivered; so a run whose timer message was
consumed while it was RUNNING (here: between two retries of a failing node), and that
then waits again with the same ``until`` (now past), was not armed again and waited for
the next sweep. No sweep runs in these tests (no beat, no started Scheduler).

Timeline (absolute ETAs, so load does not move them): the run waits on "k" with deadline
T; the event comes at once; the next node fails four times (retries after 0.5, 1, 2 and
4 s: the run is RUNNING with its lease free from +3.5 s to +7.5 s); T = +5 s falls in
that gap: the timer message ticks the run, the node succeeds, and the run waits on "k2"
with the same T, already past.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
from abstractruntime import RunStatus
from celery.contrib.testing.worker import start_worker

from abstractruntime_celery import Settings, create_scheduled_runtime
from abstractruntime_celery.app import make_app as make_celery_app
from abstractruntime_celery.tasks import install
from tests.conftest import BROKER_URL, fx_count, make_settings
from tests.workflows_regress_e import registry

# --- adapter (the only lines that differ in the copy run against d599363) -------------------------


def _settings(prefix: str) -> Settings:
    # the backoff d599363 had built in (0.5 s doubling, no jitter)
    return make_settings(prefix, retry_backoff_s=0.5, retry_jitter=False, tick_max_attempts=10)


# ---------------------------------------------------------------------------------------------------

@pytest.fixture
def fleet(prefix: str) -> Iterator[Any]:
    settings = _settings(prefix)
    app = make_celery_app(BROKER_URL, name=f"arc-{settings.queue}", config_module=None)
    install(app, registry=registry, settings=settings)
    sr = create_scheduled_runtime(app=app, settings=settings, registry=registry, auto_start=False)
    with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False, queues=[settings.queue],
                      shutdown_timeout=10, loglevel="WARNING"):
        yield sr
    sr.stop()


def _run_past_its_deadline(sr: Any, fx: str) -> tuple[str, Any]:
    until = (datetime.now(timezone.utc) + timedelta(seconds=5.5)).isoformat()
    run_id, state = sr.run(registry.get("deadline"), vars={"until": until, "fail_times": 4, "fx": fx}, timeout=30)
    assert state.status == RunStatus.WAITING and state.waiting.wait_key == "k"
    sr.resume_event(run_id=run_id, wait_key="k", payload={"first": True}, wait=False)
    done = sr.wait_for(run_id, timeout=30, until=lambda r: r.status == RunStatus.COMPLETED)
    return run_id, done


def test_a_run_waiting_again_on_a_passed_deadline_after_its_timer_fired_while_running_times_out_unswept(
        fleet: Any, fx: str) -> None:
    """(Passes before and after: before, the stale retry message of the failing node came 2 s
    later and ticked the run, so it did not wait for a sweep in this scenario.)"""
    sr = fleet
    run_id, done = _run_past_its_deadline(sr, fx)
    assert done.output["second"].get("timed_out") is True
    assert fx_count(fx, run_id, "work") == 5        # four failures, then the try the timer message made
    assert sr.stats.sweeps == 0


def test_a_run_waiting_again_on_the_same_deadline_after_its_timer_fired_while_running_is_armed_again(
        fleet: Any, fx: str) -> None:
    sr = fleet
    run_id, done = _run_past_its_deadline(sr, fx)
    assert done.output["second"].get("timed_out") is True
    assert sr.stats.timers_armed == 2, "the second wait on the same deadline got no timer of its own"
    assert sr.stats.sweeps == 0
