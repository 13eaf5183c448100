"""Adversarial, held (round M): the failure notes and the run's one pending tick.

* A node fails in a tick that is not the run's own (an event) while the run's own tick is
  queued: the retry is not sent (the queued tick holds the note); that tick, delivered inside
  the backoff, is held and becomes the retry (a new note, the backoff's ETA); the sweep sends
  nothing meanwhile; once the notes are gone (the retry lost with a killed worker) the sweep's
  orphan pass sends one tick, and the node runs once per backoff.
* ``retry_backoff_s=0`` and ``tick_max_attempts=1``: the run is FAILED after exactly
  ``tick_max_attempts`` tries, with early events in between.

Deterministic, in-process: a recording dispatcher; ``Driver.tick`` delivers by hand.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from abstractruntime_celery.sweep import sweep
from tests.conftest import fx_count, make_settings
from tests.workflows_adv_m import registry

pytestmark = pytest.mark.timeout(60)


class Recorder:
    min_eta_s = 0.0

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Optional[datetime], Optional[str]]] = []

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None,
             message_id: Optional[str] = None) -> None:
        self.sent.append((run_id, reason, eta, message_id))

    def own(self, run_id: str) -> list[tuple[str, str, Optional[datetime], Optional[str]]]:
        return [m for m in self.sent if m[0] == run_id and m[3] is not None]


def _tick(driver: Any, run_id: str, **kw: Any) -> None:
    try:
        driver.tick(run_id, **kw)
    except RuntimeError:
        pass


def test_held_a_failure_beside_a_queued_own_tick(prefix: str, fx: str) -> None:
    settings = make_settings(prefix, retry_backoff_s=30.0, retry_jitter=False, tick_max_attempts=5,
                             orphan_grace_s=0.0)
    rec = Recorder()
    driver = build(settings, registry, rec, distributed=True)
    keys, client = driver.coord.keys, driver.coord.client
    run_id = driver.start_run("am-go-then-fail", vars={"fx": fx}, dispatch=False)
    driver.tick(run_id, reason="start")
    queued = driver.coord.leases.claim([run_id])[run_id]  # the run's own tick, queued
    driver.accept_event(run_id, "go", {"v": 1}, dispatch=False)
    _tick(driver, run_id, reason="event")
    assert fx_count(fx, run_id, "tries") == 1 and rec.own(run_id) == []  # the queued tick carries it
    _tick(driver, run_id, reason="orphan", message_id=queued)  # delivered inside the backoff: held
    assert fx_count(fx, run_id, "tries") == 1
    (_, reason, eta, retry_id), = rec.own(run_id)
    assert reason == "retry" and eta is not None and client.get(keys.next_tick(run_id)) == retry_id
    assert sweep(driver, force=True).total == 0
    client.delete(keys.next_tick(run_id), keys.backoff(run_id))  # the retry died with its worker
    report = sweep(driver, force=True)
    assert report.orphans == 1
    _tick(driver, run_id, reason="orphan", message_id=rec.sent[-1][3])
    assert fx_count(fx, run_id, "tries") == 2 and driver.load(run_id).status == RunStatus.RUNNING


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_held_zero_backoff_fails_after_exactly_max_attempts(max_attempts: int, prefix: str, fx: str) -> None:
    settings = make_settings(prefix, retry_backoff_s=0.0, retry_jitter=False, tick_max_attempts=max_attempts)
    rec = Recorder()
    driver = build(settings, registry, rec, distributed=True)
    run_id = driver.start_run("am-go-then-fail", vars={"fx": fx}, dispatch=False)
    driver.tick(run_id, reason="start")
    driver.accept_event(run_id, "go", {"v": 1}, dispatch=False)
    _tick(driver, run_id, reason="event")
    for _ in range(10):
        if driver.load(run_id).status == RunStatus.FAILED:
            break
        driver.accept_event(run_id, "later", {"early": True}, dispatch=False)
        _tick(driver, run_id, reason="event")
        own = rec.own(run_id)
        if own:
            _tick(driver, run_id, reason=own[-1][1], message_id=own[-1][3])
    assert driver.load(run_id).status == RunStatus.FAILED
    assert fx_count(fx, run_id, "tries") == max_attempts
