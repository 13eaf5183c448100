"""Adversarial, held (round O): events, timers, control and the sweep against a run in backoff,
on the shared Redis store.

* An event for the wait after the failing node, accepted during the backoff: its tick is held
  (no message sent: the retry is the run's one pending tick); the retry passes, applies the
  event in the same tick, and the run completes; the node ran once per try.
* A timer fired during the backoff (the run waited on "go" with a deadline, the event came,
  the next node failed): held, the retry moves the run, which arms its next wait's timer.
* Pause during a backoff, the retry delivered while paused, then resume: the resume's tick
  runs the node and the run reaches its wait.
* The sweep against a run in backoff, again and again: no tick sent (the retry's note);
  a tick delivered anyway (a lost note) is held and makes one new note, so the next sweep
  sends nothing: no busy loop. The same for the due pass and a stored WAITING run (a node
  failing right after its due wait).
* Two events for one wait key accepted together (strict): both applied, each once, in one tick.

Deterministic, in-process: a recording dispatcher; ``Driver.tick`` delivers by hand; the
backoff's end is brought forward by rewriting its note (no sleeps, no timed asserts).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Optional

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from abstractruntime_celery.sweep import sweep
from tests.conftest import fx_count, make_settings
from tests.workflows_adv_o import registry

pytestmark = pytest.mark.timeout(60)


class Recorder:
    min_eta_s = 0.0

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Optional[datetime], Optional[str]]] = []

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None,
             message_id: Optional[str] = None) -> None:
        self.sent.append((run_id, reason, eta, message_id))

    def of(self, run_id: str) -> list[tuple[str, str, Optional[datetime], Optional[str]]]:
        return [m for m in self.sent if m[0] == run_id]


def _driver(prefix: str, **kw: Any) -> tuple[Any, Recorder]:
    base: dict[str, Any] = dict(retry_backoff_s=30.0, retry_jitter=False, tick_max_attempts=5)
    base.update(kw)
    rec = Recorder()
    return build(make_settings(prefix, **base), registry, rec, distributed=True), rec


def _due(driver: Any, run_id: str) -> None:
    client, key = driver.coord.client, driver.coord.keys.backoff(run_id)
    if client.exists(key):
        client.set(key, repr(time.time() - 1.0), px=client.pttl(key))


def _fail_once(driver: Any, rec: Recorder, fx: str, workflow: str = "ai-fail-then-wait",
               **vars: Any) -> tuple[str, tuple[Any, ...]]:
    run_id = driver.start_run(workflow, vars={"fx": fx, "fail_times": 1, **vars}, dispatch=False)
    with pytest.raises(RuntimeError):
        driver.tick(run_id, reason="start")
    (retry,) = [m for m in rec.of(run_id) if m[1] == "retry"]
    return run_id, retry


def test_held_event_during_backoff_is_applied_by_the_retry(prefix: str, fx: str) -> None:
    driver, rec = _driver(prefix)
    run_id, retry = _fail_once(driver, rec, fx)
    rec.sent.clear()
    ev = driver.accept_event(run_id, "later", {"v": 1}, dispatch=False)
    out = driver.tick(run_id, reason="event")
    assert out.skipped == "backoff" and rec.of(run_id) == []
    _due(driver, run_id)
    driver.tick(run_id, reason="retry", message_id=retry[3])
    state = driver.load(run_id)
    assert state.status == RunStatus.COMPLETED and state.output == {"ev": {"v": 1}}
    assert driver.event_applied(ev) and fx_count(fx, run_id, "tries") == 2
    assert rec.of(run_id) == [] and driver.coord.client.get(driver.coord.keys.attempts(run_id)) is None


def test_held_timer_during_backoff_then_retry_arms_the_next_wait(prefix: str, fx: str) -> None:
    driver, rec = _driver(prefix)
    run_id, retry = _fail_once(driver, rec, fx, workflow="ao-fail-then-deadline", deadline_s=5.0)
    rec.sent.clear()
    assert driver.tick(run_id, reason="timer").skipped == "backoff"  # a stray timer: held
    assert rec.of(run_id) == []
    _due(driver, run_id)
    driver.tick(run_id, reason="retry", message_id=retry[3])
    state = driver.load(run_id)
    assert state.status == RunStatus.WAITING and state.waiting.wait_key == "later"
    assert [m[1] for m in rec.of(run_id)] == ["timer"]  # the new wait's deadline is armed
    driver.tick(run_id, reason="timer")  # delivered early: nothing moves, the timer is sent again
    assert [m[1] for m in rec.of(run_id)] == ["timer", "timer"]
    assert sweep(driver, force=True, send=lambda *a: None).total == 0  # armed: nothing to send
    assert driver.load(run_id).status == RunStatus.WAITING


def test_held_pause_during_backoff_retry_while_paused_then_resume(prefix: str, fx: str) -> None:
    driver, rec = _driver(prefix)
    run_id, retry = _fail_once(driver, rec, fx)
    driver.control.pause(run_id)
    _due(driver, run_id)
    rec.sent.clear()
    driver.tick(run_id, reason="retry", message_id=retry[3])  # paused: steps nothing
    assert fx_count(fx, run_id, "tries") == 1 and rec.of(run_id) == []
    driver.control.resume(run_id)
    (resumed,) = rec.of(run_id)
    driver.tick(run_id, reason=resumed[1], message_id=resumed[3])
    state = driver.load(run_id)
    assert fx_count(fx, run_id, "tries") == 2
    assert state.status == RunStatus.WAITING and state.waiting.wait_key == "later"


def test_held_sweeps_against_a_run_in_backoff_send_nothing_again(prefix: str, fx: str) -> None:
    driver, rec = _driver(prefix, orphan_grace_s=0.0, event_redeliver_s=0.0)
    run_id, retry = _fail_once(driver, rec, fx)
    driver.accept_event(run_id, "later", {"v": 1}, dispatch=False)
    sent: list[tuple[str, str, Optional[str]]] = []
    for _ in range(3):
        sweep(driver, force=True, send=lambda r, why, mid: sent.append((r, why, mid)))
    assert sent == []
    client, keys = driver.coord.client, driver.coord.keys
    client.delete(keys.next_tick(run_id))  # the retry's note is lost (its message too)
    sweep(driver, force=True, send=lambda r, why, mid: sent.append((r, why, mid)))
    assert len(sent) == 1
    rec.sent.clear()
    assert driver.tick(run_id, reason=sent[0][1], message_id=sent[0][2]).skipped == "backoff"
    assert [m[1] for m in rec.of(run_id)] == ["retry"]  # one new retry, with its note
    for _ in range(3):
        sweep(driver, force=True, send=lambda r, why, mid: sent.append((r, why, mid)))
    assert len(sent) == 1 and fx_count(fx, run_id, "tries") == 1


def test_held_due_pass_against_a_stored_waiting_run_in_backoff(prefix: str, fx: str) -> None:
    """The due pass (a stored WAITING run whose wait is due, its node failing after it): with
    the retry's note lost, one tick, held, one new retry; then nothing, sweep after sweep."""
    driver, rec = _driver(prefix, orphan_grace_s=0.0)
    run_id = driver.start_run("aj-nap-then-fail", vars={"fx": fx, "delay": 0.2}, dispatch=False)
    driver.tick(run_id, reason="start")
    time.sleep(0.4)  # the wait is due
    with pytest.raises(RuntimeError):
        driver.tick(run_id, reason="timer")
    assert driver.load(run_id).status == RunStatus.WAITING
    driver.coord.client.delete(driver.coord.keys.next_tick(run_id))
    sent: list[tuple[str, str, Optional[str]]] = []
    report = sweep(driver, force=True, send=lambda r, why, mid: sent.append((r, why, mid)))
    assert report.due_now == [run_id] and len(sent) == 1
    rec.sent.clear()
    assert driver.tick(run_id, reason=sent[0][1], message_id=sent[0][2]).skipped == "backoff"
    assert [m[1] for m in rec.of(run_id)] == ["retry"]
    for _ in range(3):
        sweep(driver, force=True, send=lambda r, why, mid: sent.append((r, why, mid)))
    assert len(sent) == 1 and fx_count(fx, run_id, "tries") == 1


def test_held_two_events_for_one_wait_key_together(prefix: str, fx: str) -> None:
    driver, rec = _driver(prefix)
    run_id = driver.start_run("ao-loop", vars={"fx": fx, "n": 2}, dispatch=False)
    driver.tick(run_id, reason="start")
    a = driver.accept_event(run_id, "msg", {"i": 1}, dispatch=False)
    b = driver.accept_event(run_id, "msg", {"i": 2}, dispatch=False)
    driver.tick(run_id, reason="event")
    driver.tick(run_id, reason="event")
    state = driver.load(run_id)
    assert state.status == RunStatus.COMPLETED and state.output == {"got": [{"i": 1}, {"i": 2}]}
    assert driver.event_applied(a) and driver.event_applied(b) and fx_count(fx, run_id, "got") == 2
