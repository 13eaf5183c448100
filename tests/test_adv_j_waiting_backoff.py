"""Adversarial: a failing node's backoff is honoured only while the stored run is RUNNING. A
node that fails right after a timer (``WAIT_UNTIL``, or an event wait's deadline) leaves the
stored run WAITING (AbstractRuntime resolves a due wait in memory and saves only with the
next node's commit), so every tick other than the retry runs the failing node again at once:
events for a later wait (accepted early in strict mode, each sent as a tick at once), a
duplicate timer message, a manual tick... A short outage then uses up ``tick_max_attempts`` in milliseconds and
the run is FAILED, exactly the round-I finding, for the runs that fail after a timer.

README ("A failing node"): "other ticks (an early event, the sweep) leave the run alone until
its retry is due". docs/reliability.md, round I: "Until then a tick other than the retry
(reason ``retry``) steps nothing".

At fault: tick.py ``Ticker._backing_off``: ``run.status != RunStatus.RUNNING`` returns False
(no backoff) for a WAITING run whose wait is already due, though that run steps (its wait
resolves in the Runtime's tick) straight into the failing node.

Deterministic, in-process: a recording dispatcher; messages are "delivered" by calling
``Driver.tick`` by hand (Redis store and coordination, and SQLite with Redis coordination).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from tests._dispatchers import Recorder
from tests.conftest import STORE_URL, fx_count, make_settings
from tests.workflows_adv_j import registry

pytestmark = pytest.mark.timeout(60)


def _driver(kind: str, prefix: str, tmp_path: Path) -> tuple[Any, Recorder]:
    extra: dict[str, Any] = {}
    if kind == "sqlite":
        extra = {"store_url": f"sqlite:///{tmp_path}/runs.db", "coord_url": STORE_URL}
    settings = make_settings(prefix, retry_backoff_s=30.0, retry_backoff_max_s=60.0, retry_jitter=False,
                             tick_max_attempts=3, **extra)
    rec = Recorder()
    return build(settings, registry, rec, distributed=True), rec


def _fail_after_the_timer(driver: Any, rec: Recorder, workflow: str, fx: str) -> str:
    run_id = driver.start_run(workflow, vars={"fx": fx, "delay": 0.2, "deadline_s": 0.2}, dispatch=False)
    driver.tick(run_id, reason="start")
    assert driver.load(run_id).status == RunStatus.WAITING
    time.sleep(0.4)  # the wait is due
    with pytest.raises(RuntimeError, match="downstream is down"):
        driver.tick(run_id, reason="timer")
    retry = [m for m in rec.sent if m[0] == run_id and m[1] == "retry"]
    assert len(retry) == 1 and retry[0][2] is not None  # held: one retry, 30 s ahead
    return run_id


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
@pytest.mark.parametrize("workflow", ["aj-nap-then-fail", "aj-deadline-then-fail"])
def test_events_during_the_backoff_of_a_node_failing_after_a_timer_do_not_rerun_it(
        kind: str, workflow: str, prefix: str, tmp_path: Path) -> None:
    driver, rec = _driver(kind, prefix, tmp_path)
    fx = f"{prefix}fx"
    run_id = _fail_after_the_timer(driver, rec, workflow, fx)
    assert driver.load(run_id).status == RunStatus.WAITING  # the stored run: its due wait
    for n in range(2):  # events for the run's later wait (or, waiting on "first", duplicate
        # timers), each delivered as a tick at once
        if workflow == "aj-nap-then-fail":
            driver.accept_event(run_id, "later", {"n": n}, dispatch=False)
        try:
            driver.tick(run_id, reason="event" if workflow == "aj-nap-then-fail" else "timer")
        except RuntimeError:
            pass
    tries = fx_count(fx, run_id, "tries")
    state = driver.load(run_id)
    assert tries == 1 and state.status != RunStatus.FAILED, (
        f"the node ran {tries} times within its 30 s backoff and the run is {state.status.value} "
        f"({state.error}): each event's tick resolved the due wait and re-ran the node at once")


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_held_the_retry_itself_runs_the_node_and_the_sweep_sends_nothing_meanwhile(
        kind: str, prefix: str, tmp_path: Path) -> None:
    """Held: during the backoff the sweep sends no tick (the retry is the run's pending tick:
    the due pass and the event pass ask ``claim``), and the retry runs the node once more."""
    from abstractruntime_celery.sweep import sweep

    driver, rec = _driver(kind, prefix, tmp_path)
    fx = f"{prefix}fx"
    run_id = _fail_after_the_timer(driver, rec, "aj-nap-then-fail", fx)
    driver.accept_event(run_id, "later", {"n": 0}, dispatch=False)
    sent: list[tuple[str, str]] = []
    sweep(driver, force=True, send=lambda r, reason, mid: sent.append((r, reason)))
    assert [s for s in sent if s[0] == run_id] == []
    # A retry delivered long before its backoff ends (a held ETA lost its time) is held
    # again, with the rest of the backoff: the node does not run.
    pending = [m for m in rec.sent if m[0] == run_id and m[1] == "retry"][-1]
    rec.sent.clear()
    driver.tick(run_id, reason="retry", message_id=pending[3])
    assert fx_count(fx, run_id, "tries") == 1
    again = [m for m in rec.sent if m[0] == run_id]
    assert [m[1] for m in again] == ["retry"] and again[0][2] is not None
    assert abs(again[0][2].timestamp() - pending[2].timestamp()) < 1.0  # the same end
    # Once the backoff is due (its note says now), the retry runs the node once more.
    client = driver.coord.client
    key = driver.coord.keys.backoff(run_id)
    client.set(key, repr(time.time()), px=client.pttl(key))
    with pytest.raises(RuntimeError):
        driver.tick(run_id, reason="retry")
    assert fx_count(fx, run_id, "tries") == 2
