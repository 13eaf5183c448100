"""Adversarial: a tick that moved a marked run clears the run's failure notes (attempts,
backoff, unknown-workflow) *after* its lease release and its messages (tick.py
``Ticker.tick``: ``self.coord.marks.moved(run_id)`` once ``_follow_up`` has sent the run's
next tick). The next tick may already have run on another worker (or an embedded pool thread)
by then: if its node failed, the late clear deletes that failure's attempt count and its
backoff note. The new retry is still queued 60 s ahead, but nothing holds the run back any
more: an event sent early runs the failing node again at once, and the failure row has lost
a count (and the failure that was erased had counted the earlier, already recovered, failure).

Sequence (Redis store, shared coordination): node ``a`` fails once (attempts 1, backoff);
its retry T1 runs ``a`` successfully with ``max_steps=1`` and sends the run's ``continue``
tick T2 as it releases; T2 runs ``b``, which fails (attempts 2, backoff 60 s, retry R2 sent);
then T1 clears the notes. Here T2 is delivered synchronously by the recording dispatcher,
inside T1's send: the order a fast second worker gives. (The test moves the first backoff's
deadline to now instead of waiting 30 s for the retry to be due.)

README ("A failing node"): "other ticks (an early event, the sweep) leave the run alone until
its retry is due"; "after ``tick_max_attempts`` failures in a row".

At fault: tick.py ``Ticker.tick`` (the ``ctx.clear_marks`` branch runs after the release and
``_follow_up``, and deletes whatever notes exist then, not the ones its lease read saw) /
coord/redis.py ``RedisMarks.moved``. Stores other than the shared Redis clear under the lease
(``_step``), and are not affected.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Optional

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from tests.conftest import STORE_URL, fx_count, make_settings
from tests.workflows_adv_j import registry

pytestmark = pytest.mark.timeout(60)


class DeliverContinue:
    """Records messages; the first ``continue`` is delivered at once (inside the sender)."""

    min_eta_s = 0.0

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Optional[datetime], Optional[str]]] = []
        self.driver: Any = None
        self.armed = False
        self.errors: list[str] = []

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None,
             message_id: Optional[str] = None) -> None:
        self.sent.append((run_id, reason, eta, message_id))
        if self.armed and reason == "continue":
            self.armed = False
            try:
                self.driver.tick(run_id, reason=reason, message_id=message_id, max_steps=1)
            except RuntimeError as exc:
                self.errors.append(str(exc))


def _setup(prefix: str) -> tuple[Any, DeliverContinue, str, str]:
    settings = make_settings(prefix, retry_backoff_s=30.0, retry_backoff_max_s=60.0, retry_jitter=False,
                             tick_max_attempts=5)
    rec = DeliverContinue()
    driver = build(settings, registry, rec, distributed=True)
    rec.driver = driver
    fx = f"{prefix}fx"
    run_id = driver.start_run("ai-flaky-two", vars={"fx": fx, "a_fails": 1, "b_fails": 100}, dispatch=False)
    with pytest.raises(RuntimeError, match="a is down"):
        driver.tick(run_id, reason="start", max_steps=1)
    client = redis.Redis.from_url(STORE_URL, decode_responses=True)
    client.set(driver.coord.keys.backoff(run_id), repr(time.time() - 0.01), px=60_000)  # the retry is due
    retry = [m for m in rec.sent if m[0] == run_id and m[1] == "retry"][-1]
    rec.armed = True
    outcome = driver.tick(run_id, reason="retry", message_id=retry[3], max_steps=1)  # T1 (T2 inside)
    assert outcome.changed and rec.errors == ["b is down"]  # a committed; T2 ran b, which failed
    assert [m[1] for m in rec.sent if m[0] == run_id][-1] == "retry"  # b's retry R2 is queued
    return driver, rec, run_id, fx


def test_the_backoff_of_a_failure_in_the_next_tick_survives_the_previous_ticks_clear(prefix: str) -> None:
    driver, _, run_id, fx = _setup(prefix)
    driver.accept_event(run_id, "later", {"n": 1}, dispatch=False)  # an early event, within R2's backoff
    try:
        driver.tick(run_id, reason="event")
    except RuntimeError:
        pass
    runs_of_b = fx_count(fx, run_id, "b")
    assert runs_of_b == 1, f"b failed, its retry is 60 s ahead, and an event's tick ran it again at once " \
                           f"({runs_of_b} runs): its backoff note was deleted by the tick before it"


def test_the_attempt_of_a_failure_in_the_next_tick_survives_the_previous_ticks_clear(prefix: str) -> None:
    driver, _, run_id, _ = _setup(prefix)
    client = redis.Redis.from_url(STORE_URL, decode_responses=True)
    attempts = client.get(driver.coord.keys.attempts(run_id))
    assert attempts == "1", f"b failed once since a recovered; the run's failed attempts read {attempts}"
    assert driver.load(run_id).status == RunStatus.RUNNING
