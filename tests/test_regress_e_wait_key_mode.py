"""Which waits an event may answer: strict on a fleet, the seed's rule embedded (regression,
branch regress-e).

Before: ``wait_key=None`` answered any wait, a child's result or a timer included, so a
web app passing the key through from a request could forge a child's output. Now
(``wait_key_mode``, "auto" = strict when distributed, seed embedded): in strict mode
only EVENT, USER and JOB waits can be answered, never the driver's own waits (a
child's ``subworkflow:`` key, the synthetic pause wait), and the key must be given and
match; an early event to a RUNNING run is still accepted when its key is given. The
embedded mode keeps the seed's behaviour (a key of None answers whatever the run waits
on), as the seed's own Scheduler does.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional

import pytest
from abstractruntime import RunStatus, WaitReason
from abstractruntime import create_scheduled_runtime as seed_runtime

from abstractruntime_celery import (
    RunNotWaitingError,
    RunPausedError,
    Settings,
    WaitKeyMismatchError,
    create_scheduled_runtime,
)
from tests.conftest import make_app, make_settings
from tests.workflows import WORKFLOWS, registry

# --- adapters (the only lines that differ in the copy run against d599363) -----------------------


def _settings(prefix: str, **overrides: Any) -> Settings:
    return make_settings(prefix, **overrides)


def _embedded_settings(**overrides: Any) -> Optional[Settings]:
    return Settings(**overrides) if overrides else None


def _pending_events(sr: Any, run_id: str) -> list[Any]:
    return list(sr.driver.coord.inbox.pending(run_id).events)


# --------------------------------------------------------------------------------------------------

@contextmanager
def fleet(prefix: str, **overrides: Any) -> Iterator[Any]:
    """The distributed API (a web app's view) with no worker: the test ticks runs here."""
    settings = _settings(prefix, **overrides)
    sr = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry, auto_start=False)
    try:
        yield sr
    finally:
        sr.stop()


def _waiting(sr: Any, workflow: str, **vars: Any) -> tuple[str, Any]:
    run_id = sr.driver.start_run(workflow, vars=vars, dispatch=False)
    state = sr.tick(run_id)
    assert state.status == RunStatus.WAITING, state
    return run_id, state


# --- distributed: strict by default --------------------------------------------------------------------

def test_on_a_fleet_no_event_can_forge_a_childs_result(prefix: str) -> None:
    with fleet(prefix) as sr:
        parent, state = _waiting(sr, "parent", child_delay=3600)
        assert state.waiting.reason == WaitReason.SUBWORKFLOW
        child_key = state.waiting.wait_key
        child_id = child_key.split(":", 1)[1]
        forged = {"sub_run_id": child_id, "output": {"forged": True}}
        with pytest.raises(WaitKeyMismatchError):
            sr.resume_event(run_id=parent, wait_key=None, payload=forged, wait=False)
        with pytest.raises(RunNotWaitingError):
            sr.resume_event(run_id=parent, wait_key=child_key, payload=forged, wait=False)
        with pytest.raises(ValueError):          # respond looks the key up: still the child's
            sr.respond(parent, forged, wait=False)
        assert _pending_events(sr, parent) == []
        after = sr.tick(parent)
        assert after.status == RunStatus.WAITING and after.waiting.wait_key == child_key
        assert "forged" not in str(after.vars)


def test_on_a_fleet_no_early_event_can_take_a_childs_key_before_the_parent_waits_on_it(prefix: str) -> None:
    with fleet(prefix) as sr:
        parent = sr.driver.start_run("parent", vars={"child_delay": 3600}, dispatch=False)  # RUNNING
        with pytest.raises(RunNotWaitingError):
            sr.resume_event(run_id=parent, wait_key="subworkflow:sub-0123456789abcdef0123456789abcdef",
                            payload={"output": {"forged": True}}, wait=False)
        assert _pending_events(sr, parent) == []


def test_on_a_fleet_a_key_of_none_answers_no_wait_not_even_an_event_wait(prefix: str) -> None:
    with fleet(prefix) as sr:
        event_run, _ = _waiting(sr, "event", key="k")
        timer_run, timer_state = _waiting(sr, "timer", delay=3600)
        ask_run, _ = _waiting(sr, "ask")
        for run_id in (event_run, timer_run, ask_run):
            with pytest.raises(WaitKeyMismatchError):
                sr.resume_event(run_id=run_id, wait_key=None, payload={"x": 1}, wait=False)
            assert _pending_events(sr, run_id) == []
            assert sr.tick(run_id).status == RunStatus.WAITING
        # a timer is no event's to answer: a keyed event waits for a later wait with that key
        sr.resume_event(run_id=timer_run, wait_key="k", payload={"x": 1}, wait=False)
        after = sr.tick(timer_run)
        assert after.status == RunStatus.WAITING and after.waiting.until == timer_state.waiting.until
        assert len(_pending_events(sr, timer_run)) == 1
        # the keyed answers work: EVENT and USER waits
        sr.resume_event(run_id=event_run, wait_key="k", payload={"x": 2}, wait=False)
        assert sr.tick(event_run).output == {"event": {"x": 2}}
        sr.respond(ask_run, {"text": "yes"}, wait=False)
        assert sr.tick(ask_run).status == RunStatus.COMPLETED


def test_on_a_fleet_an_early_event_to_a_running_run_needs_its_key_and_is_then_kept_and_applied(
        prefix: str) -> None:
    with fleet(prefix) as sr:
        run_id = sr.driver.start_run("event", vars={"key": "k"}, dispatch=False)  # RUNNING, not at its wait
        with pytest.raises(WaitKeyMismatchError):
            sr.resume_event(run_id=run_id, wait_key=None, payload={"x": 1}, wait=False)
        assert _pending_events(sr, run_id) == []
        sr.resume_event(run_id=run_id, wait_key="k", payload={"x": 3}, wait=False)
        assert len(_pending_events(sr, run_id)) == 1
        assert sr.tick(run_id).output == {"event": {"x": 3}}


def test_on_a_fleet_the_pause_wait_takes_no_event(prefix: str) -> None:
    """(The pause API is new: this is the expected behaviour, not a before/after regression.)"""
    with fleet(prefix) as sr:
        run_id = sr.driver.start_run("event", vars={"key": "k"}, dispatch=False)
        paused = sr.pause_run(run_id)
        assert paused.waiting is not None and paused.waiting.wait_key == f"pause:{run_id}"
        for key in (f"pause:{run_id}", None, "k"):
            with pytest.raises((RunPausedError, WaitKeyMismatchError)):
                sr.resume_event(run_id=run_id, wait_key=key, payload={"x": 1}, wait=False)
        assert _pending_events(sr, run_id) == []
        sr.resume_run(run_id)
        assert sr.tick(run_id).waiting.wait_key == "k"


def test_strict_mode_can_be_chosen_for_the_embedded_mode(prefix: str) -> None:
    sr = create_scheduled_runtime(workflows=list(WORKFLOWS), settings=_embedded_settings(wait_key_mode="strict"))
    try:
        run_id, state = sr.run(registry.get("event"), vars={"key": "k"})
        assert state.status == RunStatus.WAITING
        with pytest.raises(WaitKeyMismatchError):
            sr.resume_event(run_id=run_id, wait_key=None, payload={"x": 1})
        assert sr.resume_event(run_id=run_id, wait_key="k", payload={"x": 1}).output == {"event": {"x": 1}}
    finally:
        sr.stop()


# --- embedded: the seed's rule ---------------------------------------------------------------------------

@pytest.mark.parametrize("workflow, vars", [("event", {"key": "k"}), ("timer", {"delay": 3600}), ("ask", {})])
def test_embedded_a_key_of_none_answers_the_wait_as_the_seed_does(workflow: str, vars: dict[str, Any]) -> None:
    """(Kept behaviour: passes before and after the fix.)"""
    ours = create_scheduled_runtime(workflows=list(WORKFLOWS))
    seed = seed_runtime(workflows=list(WORKFLOWS))
    try:
        results = []
        for sr in (ours, seed):
            run_id, state = sr.run(registry.get(workflow), vars=dict(vars))
            assert state.status == RunStatus.WAITING
            after = sr.resume_event(run_id=run_id, wait_key=None, payload={"x": 1})
            if after.status == RunStatus.RUNNING:  # the seed's resume leaves it to the next tick
                after = sr.tick(run_id)
            results.append((after.status, after.current_node, sorted(after.output or {})))
        assert results[0] == results[1]
    finally:
        ours.stop()
        seed.stop()


def test_seed_mode_can_be_chosen_for_a_fleet(prefix: str) -> None:
    """(Kept behaviour: passes before and after the fix.)"""
    with fleet(prefix, wait_key_mode="seed") as sr:
        run_id, _ = _waiting(sr, "event", key="k")
        sr.resume_event(run_id=run_id, wait_key=None, payload={"x": 4}, wait=False)
        assert sr.tick(run_id).output == {"event": {"x": 4}}
