"""Adversarial, held (round O): events meeting a tick on the shared Redis store.

* An event accepted while a tick holds the run (its delivery finds the lease busy and leaves
  the pending word), for the wait the tick is about to reach: the release sends the run one
  tick of its own, which applies it; nothing is lost, nothing applied twice.
* ``tick_max_steps=1`` with events accepted early (strict) for a looping wait: every message
  delivered in turn (own ticks with their ids), each event is applied once, and the message
  chain ends.

Deterministic, in-process: a recording dispatcher; every message is delivered by hand.
"""

from __future__ import annotations

from typing import Any

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from tests._dispatchers import Recorder
from tests.conftest import fx_count, make_settings
from tests.workflows_adv_o import HOOKS, registry

pytestmark = pytest.mark.timeout(60)


def _pump(driver: Any, rec: Recorder, limit: int = 200) -> int:
    """Deliver every recorded message, oldest first, until none is left; how many."""
    n = 0
    while rec.sent:
        run_id, reason, _, mid = rec.sent.pop(0)
        driver.tick(run_id, reason=reason, message_id=mid)
        n += 1
        assert n < limit, "the message chain never ends"
    return n


def test_held_an_event_accepted_while_a_tick_holds_the_run(prefix: str, fx: str) -> None:
    rec = Recorder()
    driver = build(make_settings(prefix), registry, rec, distributed=True)
    run_id = driver.start_run("ao-loop", vars={"fx": fx, "n": 2}, dispatch=False)
    driver.tick(run_id, reason="start")
    events: list[Any] = []

    def meanwhile(rid: str) -> None:  # another client, during the tick that applies the first
        events.append(driver.accept_event(rid, "msg", {"i": 2}, dispatch=False))
        assert driver.coord.leases.acquire(rid, "") is None  # its delivery: busy, leaves word

    HOOKS[run_id] = meanwhile
    try:
        first = driver.accept_event(run_id, "msg", {"i": 1}, dispatch=False)
        driver.tick(run_id, reason="event")
    finally:
        HOOKS.pop(run_id, None)
    assert [m[1] for m in rec.sent] == ["asked"] and rec.sent[0][3] is not None
    _pump(driver, rec)
    state = driver.load(run_id)
    assert state.status == RunStatus.COMPLETED and state.output == {"got": [{"i": 1}, {"i": 2}]}
    assert driver.event_applied(first) and driver.event_applied(events[0]) and fx_count(fx, run_id, "got") == 2


def test_held_max_steps_one_with_early_events(prefix: str, fx: str) -> None:
    rec = Recorder()
    driver = build(make_settings(prefix, tick_max_steps=1), registry, rec, distributed=True)
    run_id = driver.start_run("ao-loop", vars={"fx": fx, "n": 4}, dispatch=True)
    evs = [driver.accept_event(run_id, "msg", {"i": i}, dispatch=True) for i in range(4)]
    _pump(driver, rec)
    state = driver.load(run_id)
    assert state.status == RunStatus.COMPLETED and state.output == {"got": [{"i": i} for i in range(4)]}
    assert all(driver.event_applied(e) for e in evs) and fx_count(fx, run_id, "got") == 4
