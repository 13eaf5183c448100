"""Adversarial (round O): a run failed by ``tick_max_attempts`` keeps the events accepted
during its backoff, and nothing is sent to drop them.

A node fails; during its backoff an event for the run's next wait is accepted (its tick is
held). The retry fails again and ``tick_max_attempts`` marks the run FAILED (``fail_run``).
The run has ended, but its inbox still holds the event and no tick of its own is sent: the
event is dropped (and reported) only when a sweep's event pass finds it, ``event_redeliver_s``
(30 s by default) after it was accepted, plus up to a sweep interval. Until then
``resume_event(wait=True)`` for it keeps waiting on a run that has ended (and with its default
timeout may raise ``RunWaitTimeout``), and the run's inbox counts against it. A cancel (its own
tick) or a run that completes drops such events at once (``Ticker._after_terminal``).

At fault: tick.py ``Ticker.fail_run`` (the FAILED save neither drops the run's untaken events
with its commit, as ``_after_terminal`` does for other ends, nor asks for a tick of its own).

Deterministic, in-process: a recording dispatcher; ``Driver.tick`` delivers by hand; the
backoff's end is brought forward by rewriting its note.
"""

from __future__ import annotations

import time

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from tests._dispatchers import Recorder
from tests.conftest import make_settings
from tests.workflows_adv_o import registry

pytestmark = pytest.mark.timeout(60)


def test_events_of_a_run_failed_by_max_attempts_wait_for_the_sweep(prefix: str, fx: str) -> None:
    settings = make_settings(prefix, retry_backoff_s=30.0, retry_jitter=False, tick_max_attempts=2)
    rec = Recorder()
    driver = build(settings, registry, rec, distributed=True)
    client, keys = driver.coord.client, driver.coord.keys
    run_id = driver.start_run("ai-fail-then-wait", vars={"fx": fx}, dispatch=False)
    with pytest.raises(RuntimeError):
        driver.tick(run_id, reason="start")
    (retry,) = [m for m in rec.sent if m[1] == "retry"]
    event = driver.accept_event(run_id, "later", {"v": 1}, dispatch=False)
    assert driver.tick(run_id, reason="event").skipped == "backoff"
    client.set(keys.backoff(run_id), repr(time.time() - 1.0), px=client.pttl(keys.backoff(run_id)))
    rec.sent.clear()
    with pytest.raises(RuntimeError):
        driver.tick(run_id, reason="retry", message_id=retry[3])
    run, applied, settled = driver.snapshot(run_id, event)
    assert run.status == RunStatus.FAILED and settled
    own = [m for m in rec.sent if m[0] == run_id]
    assert applied or own, (
        "the run is FAILED, but the event accepted during its backoff is still in its inbox and "
        "no tick was sent to drop it: resume_event(wait=True) waits for the sweep's event pass")
