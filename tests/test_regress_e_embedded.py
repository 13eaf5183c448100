"""The embedded mode, as the seed behaves (regression, branch regress-e).

Before:
(a) ``on_run_resumed`` ran while the tick still held the run's lease: a callback that
    answers the run's next wait blocked for its whole timeout (the seed completes it at once);
(b) stopped (or ``auto_start=False``), an event accepted while another call's tick held the
    run went to a dispatcher that silently dropped the re-tick, and ``poll_once()`` dropped
    the redelivery too: accepted, and stranded;
(c) ``run(max_steps=N)`` raised ``RunWaitTimeout`` instead of returning the RUNNING state
    after N steps as the seed does (and the run kept going in the background);
(d) ``stop(timeout=1.0)`` waited for every queued tick (15.7 s).

In-memory stores, no server (the conftest only checks Redis is up).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from abstractruntime import Effect, EffectType, RunState, RunStatus, StepPlan, WorkflowSpec
from abstractruntime import create_scheduled_runtime as seed_runtime

from abstractruntime_celery import Settings, create_scheduled_runtime
from tests.workflows import WORKFLOWS, registry

# --- adapter (the only line that differs in the copy run against d599363) -------------------------------

def _pending(sr: Any, run_id: str) -> list[Any]:
    return list(sr.driver.coord.inbox.pending(run_id).events)


# --- (a) a callback that answers the run's next wait ----------------------------------------------------


def test_on_run_resumed_can_answer_the_runs_next_wait_at_once() -> None:
    answers: list[Any] = []
    sr: Any = None

    def on_resumed(state: RunState) -> None:
        # resumed from its first wait and now waiting on the second: answer it, here
        if state.status == RunStatus.WAITING and state.current_node == "second" and not answers:
            try:
                answers.append(sr.resume_event(run_id=state.run_id, wait_key="k", payload={"n": 2}, timeout=5))
            except BaseException as exc:  # reported below
                answers.append(exc)

    sr = create_scheduled_runtime(workflows=list(WORKFLOWS), on_run_resumed=on_resumed)
    try:
        run_id, state = sr.run(registry.get("twice"))
        assert state.status == RunStatus.WAITING and state.current_node == "first"
        final = sr.resume_event(run_id=run_id, wait_key="k", payload={"n": 1}, timeout=10)
        assert len(answers) == 1
        assert isinstance(answers[0], RunState), f"the callback's answer failed: {answers[0]!r}"
        assert answers[0].status == RunStatus.COMPLETED
        assert final.status == RunStatus.COMPLETED and final.output == {"a": {"n": 1}, "b": {"n": 2}}
    finally:
        sr.stop()


# --- (b) stopped: accepted events are applied or refused, never stranded -----------------------------------

def gated_twice(entered: threading.Event, gate: threading.Event) -> WorkflowSpec:
    """Wait on "k", then a node that holds its tick until ``gate`` opens, then wait on "k" again."""

    def first(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="first", next_node="work",
                        effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "k"}, result_key="a"))

    def work(run: RunState, ctx: Any) -> StepPlan:
        entered.set()
        gate.wait(10)
        return StepPlan(node_id="work", next_node="second")

    def second(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="second", next_node="end",
                        effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "k"}, result_key="b"))

    def end(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="end", complete_output={"a": run.vars.get("a"), "b": run.vars.get("b")})

    return WorkflowSpec("gated_twice", "first", {"first": first, "work": work, "second": second, "end": end})


@pytest.mark.parametrize("how", ["auto_start=False", "stopped"])
def test_an_event_accepted_while_another_calls_tick_holds_the_run_is_applied_when_not_running(how: str) -> None:
    entered, gate = threading.Event(), threading.Event()
    spec = gated_twice(entered, gate)
    sr = create_scheduled_runtime(workflows=[spec], auto_start=(how == "stopped"))
    if how == "stopped":
        sr.stop()
    try:
        run_id, state = sr.run(spec)
        assert state.status == RunStatus.WAITING and state.current_node == "first"
        first: list[Any] = []
        t1 = threading.Thread(target=lambda: first.append(sr.respond(run_id, {"n": 1}, timeout=15)))
        t1.start()
        assert entered.wait(10)                  # the first call's tick holds the run (its node runs)
        threading.Timer(0.3, gate.set).start()   # ... and lets go a moment after the second call comes in
        try:
            second = sr.resume_event(run_id=run_id, wait_key="k", payload={"n": 2}, timeout=10)
        except ValueError:                       # refused outright is fine too (nothing stored)
            second = None
        t1.join(20)
        final = sr.get_state(run_id)
        pending = _pending(sr, run_id)
        assert pending == [], f"an accepted event was left in the inbox: {pending}"
        if second is not None:                   # accepted: it was applied
            assert final.status == RunStatus.COMPLETED and final.output == {"a": {"n": 1}, "b": {"n": 2}}
            assert second.status == RunStatus.COMPLETED
        assert first and first[0].vars.get("a") == {"n": 1}
    finally:
        gate.set()
        sr.stop()


@pytest.mark.parametrize("how", ["auto_start=False", "stopped"])
def test_poll_once_applies_an_event_whose_tick_was_sent_while_the_scheduler_was_not_running(how: str) -> None:
    sr = create_scheduled_runtime(workflows=list(WORKFLOWS), auto_start=(how == "stopped"),
                                  settings=Settings(event_redeliver_s=0.0))
    if how == "stopped":
        sr.stop()
    try:
        run_id, state = sr.run(registry.get("event"), vars={"key": "k"})
        assert state.status == RunStatus.WAITING
        # accepted, its tick sent to the dispatcher (which holds it: nothing runs while stopped)
        sr.driver.accept_event(run_id, "k", {"v": 1})
        assert sr.get_state(run_id).status == RunStatus.WAITING
        sr.scheduler.poll_once()                 # the seed's way to drive a stopped scheduler
        assert sr.get_state(run_id).output == {"event": {"v": 1}}
        assert _pending(sr, run_id) == []
    finally:
        sr.stop()


# --- (c) run(max_steps=N) ----------------------------------------------------------------------------------

def test_run_with_max_steps_returns_the_running_state_after_n_steps_as_the_seed_does() -> None:
    ours = create_scheduled_runtime(workflows=list(WORKFLOWS))
    seed = seed_runtime(workflows=list(WORKFLOWS))
    try:
        states = {}
        for name, sr in (("ours", ours), ("seed", seed)):
            run_id, state = (sr.run(registry.get("steps"), vars={"n": 1_000_000}, max_steps=5, timeout=5)
                             if name == "ours" else
                             sr.run(registry.get("steps"), vars={"n": 1_000_000}, max_steps=5))
            states[name] = (run_id, state)
        for name, (run_id, state) in states.items():
            assert state.status == RunStatus.RUNNING, name
            assert state.vars["i"] == 5, name
        # and nothing drives it on behind the caller's back (the seed leaves it for the next tick)
        run_id = states["ours"][0]
        time.sleep(1.0)
        assert ours.get_state(run_id).vars["i"] == 5
        assert ours.tick(run_id, max_steps=3).vars["i"] == 8   # the caller drives it on, as with the seed
    finally:
        ours.stop()
        seed.stop()


# --- (d) stop(timeout) -----------------------------------------------------------------------------------

def test_stop_returns_within_its_timeout_with_many_slow_ticks_queued_and_loses_none(fx: str) -> None:
    sr = create_scheduled_runtime(workflows=list(WORKFLOWS))
    try:
        run_ids = [sr.start(workflow=registry.get("slow"), vars={"sleep": 0.8, "fx": fx}) for _ in range(40)]
        time.sleep(0.2)                          # four of them run now, 36 are queued
        started = time.monotonic()
        sr.stop(timeout=1.0)
        took = time.monotonic() - started
        assert took < 5.0, f"stop(timeout=1.0) took {took:.1f}s"
        # none lost: started again, every run completes
        sr.start_scheduler()
        for run_id in run_ids:
            done = sr.wait_for(run_id, timeout=60, until=lambda r: r.status == RunStatus.COMPLETED)
            assert done.output == {"ok": True}
    finally:
        sr.stop()
