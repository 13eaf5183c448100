"""RabbitMQ as the broker, classic and quorum queues (run with ARC_TEST_BROKER=amqp://...
and, for quorum, ARC_TEST_QUEUE_TYPE=quorum; .ci/run does both). On Redis they skip.

With quorum queues Celery switches to RabbitMQ's native delayed delivery: an ETA becomes
a whole-second countdown through a chain of delay queues (``celery_delayed_<n>``) and a
topic exchange, and a delay under one second raises ValueError. These tests prove that our
queue is the type asked for, that a timer waits in RabbitMQ (not in a worker), and that the
one-second edge no longer breaks a send.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.dispatch import TICK_TASK
from abstractruntime_celery.timers import parse_until
from tests.conftest import AMQP, QUEUE_TYPE, fx_count
from tests.workflows import registry

pytestmark = [pytest.mark.broker,
              pytest.mark.skipif(not AMQP, reason="RabbitMQ only: set ARC_TEST_BROKER=amqp://...")]
QUORUM = QUEUE_TYPE == "quorum"
quorum_only = pytest.mark.skipif(AMQP and not QUORUM, reason="quorum queues only: set ARC_TEST_QUEUE_TYPE=quorum")


@pytest.fixture
def sr(celery_app: Any, settings: Any, worker: Any) -> Iterator[Any]:
    rt = create_scheduled_runtime(app=celery_app, settings=settings, registry=registry, auto_start=False)
    yield rt
    rt.stop()


def test_the_queue_is_of_the_type_asked_for(sr: Any, celery_app: Any, settings: Any) -> None:
    from amqp.exceptions import PreconditionFailed

    other = "classic" if QUORUM else "quorum"
    with celery_app.connection_for_write() as conn:
        channel = conn.channel()
        with pytest.raises(PreconditionFailed, match="x-queue-type"):
            channel.queue_declare(queue=settings.queue, durable=True, auto_delete=False,
                                  arguments={"x-queue-type": other})


def _delayed_messages(app: Any) -> int:
    """Messages waiting in Celery's native delayed delivery queues (passive declares)."""
    with app.connection_for_write() as conn:
        channel = conn.channel()
        return sum(channel.queue_declare(queue=f"celery_delayed_{level}", passive=True).message_count
                   for level in range(28))


@quorum_only
def test_a_timer_waits_in_rabbitmq_not_in_a_worker(sr: Any, fx: str) -> None:
    run_id, state = sr.run(registry.get("timer"), vars={"delay": 3.0, "fx": fx})
    assert state.status == RunStatus.WAITING
    deadline, seen = time.monotonic() + 3.0, 0
    while not seen and time.monotonic() < deadline:
        seen = _delayed_messages(sr.scheduler.app)
        time.sleep(0.05)
    assert seen >= 1, "the timer's ETA message never sat in a celery_delayed_<n> queue"
    done = sr.wait_for(run_id, timeout=15, until=lambda r: r.status == RunStatus.COMPLETED)
    assert done.output["woke_at"] >= parse_until(done.vars["until"])  # never early
    assert fx_count(fx, run_id, "done") == 1


@quorum_only
def test_a_countdown_under_a_second_is_refused_by_celery_but_not_by_our_sends(sr: Any, settings: Any,
                                                                              fx: str) -> None:
    app = sr.scheduler.app
    soon = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    with pytest.raises(ValueError, match="countdown must be a positive number"):
        app.send_task(TICK_TASK, args=["no-such-run"], queue=settings.queue, eta=soon)
    run_id, _ = sr.run(registry.get("flaky"), vars={"fail_times": 1, "fx": fx}, wait=False)  # a retry in < 1 s
    for reason, ahead in (("timer", 1.0), ("timer", 0.3), ("retry", 0.3), ("retry", 1.0)):
        sr.driver.dispatcher.send(run_id, reason, datetime.now(timezone.utc) + timedelta(seconds=ahead))
    done = sr.wait_for(run_id, timeout=15, until=lambda r: r.status == RunStatus.COMPLETED)
    assert done.output == {"tries": 2}


def test_timers_waiting_take_no_worker_slot_from_other_ticks(sr: Any, fx: str) -> None:
    # More timers than the worker's 4 threads, then an event: on a quorum queue behind a
    # direct exchange each held ETA message kept a prefetch slot, and the event waited for
    # the timers. It must be applied while they all still wait.
    timers = [sr.run(registry.get("timer"), vars={"delay": 4.0, "fx": fx})[0] for _ in range(6)]
    run_id, _ = sr.run(registry.get("event"), vars={"key": "go", "fx": fx})
    assert sr.scheduler.resume_event(run_id=run_id, wait_key="go", payload={}).status == RunStatus.COMPLETED
    assert [sr.get_state(t).status for t in timers] == [RunStatus.WAITING] * 6
    for t in timers:
        sr.wait_for(t, timeout=20, until=lambda r: r.status == RunStatus.COMPLETED)


@quorum_only
def test_a_sub_second_timer_is_not_lost_to_a_tick_asked_meanwhile(sr: Any, celery_app: Any, settings: Any,
                                                                   fx: str) -> None:
    # A tick that ends waiting under a second sends its timer with no ETA (native delayed
    # delivery refuses less than a second). When a tick was asked meanwhile (a delivery
    # found the lease busy), the run's own tick also goes with no ETA: the timer message
    # must not be merged into it, or the own tick runs before the deadline, the timer's
    # note says one is in flight, and the run waits until that note expires (minutes).
    import redis

    from tests.conftest import FX_URL

    run_id, _ = sr.run(registry.get("gated-timer"), vars={"delay": 0.3, "fx": fx}, wait=False)
    deadline = time.monotonic() + 10
    while fx_count(fx, run_id, "gate_reached") == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fx_count(fx, run_id, "gate_reached") == 1
    busy = sr.stats.lease_busy
    sr.scheduler.app.send_task(TICK_TASK, args=[run_id], queue=settings.queue)  # finds the lease held
    while sr.stats.lease_busy == busy and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sr.stats.lease_busy > busy
    redis.Redis.from_url(FX_URL).hset(fx, f"{run_id}:open", 1)
    done = sr.wait_for(run_id, timeout=10, until=lambda r: r.status == RunStatus.COMPLETED)
    assert done.output["woke_at"] >= parse_until(done.vars["until"])
    assert fx_count(fx, run_id, "done") == 1
