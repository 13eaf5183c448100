"""The zero-config embedded mode: no broker, no server, the seed's behaviour.

Everything here runs in this process (worker threads and a timer heap over
in-memory stores); no Redis is involved except the conftest's liveness check.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
from abstractruntime import Effect, EffectType, InMemoryRunStore, RunState, RunStatus, StepPlan, WorkflowSpec

from abstractruntime_celery import (
    RunHandle,
    RunNotWaitingError,
    ScheduledRuntime,
    Settings,
    UnknownWorkflowError,
    WorkflowRegistry,
    create_scheduled_runtime,
)
from tests.workflows import WORKFLOWS


def _iso(offset_s: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=offset_s)).isoformat()


def fresh_registry(*extra: WorkflowSpec) -> WorkflowRegistry:
    """The shared test workflows in a registry of this test's own (tests may unregister)."""
    reg = WorkflowRegistry()
    for spec in (*WORKFLOWS, *extra):
        reg.register(spec)
    return reg


def timer_then_event(delay_s: float) -> WorkflowSpec:
    """WAIT_UNTIL ``delay_s`` from now, then WAIT_EVENT on 'go'; output the event."""

    def nap(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="nap", next_node="listen",
                        effect=Effect(EffectType.WAIT_UNTIL, {"until": _iso(delay_s)}))

    def listen(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="listen", next_node="end",
                        effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "go"}, result_key="got"))

    def end(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="end", complete_output={"got": run.vars.get("got")})

    return WorkflowSpec("timer_then_event", "nap", {"nap": nap, "listen": listen, "end": end})


def fails_once() -> WorkflowSpec:
    """Its only node raises on the first try and completes on the second."""
    tries: dict[str, int] = {}
    lock = threading.Lock()

    def work(run: RunState, ctx: Any) -> StepPlan:
        with lock:
            tries[run.run_id] = tries.get(run.run_id, 0) + 1
            n = tries[run.run_id]
        if n == 1:
            raise RuntimeError("first try fails")
        return StepPlan(node_id="work", complete_output={"tries": n})

    return WorkflowSpec("fails_once", "work", {"work": work})


def far_timer(workflow_id: str = "far") -> WorkflowSpec:
    def nap(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="nap", next_node="end", effect=Effect(EffectType.WAIT_UNTIL, {"until": _iso(3600)}))

    def end(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="end", complete_output={"ok": True})

    return WorkflowSpec(workflow_id, "nap", {"nap": nap, "end": end})


@pytest.fixture
def runtimes() -> Iterator[list[ScheduledRuntime]]:
    """Runtimes a test makes; all stopped at its end."""
    made: list[ScheduledRuntime] = []
    yield made
    for sr in made:
        sr.stop()


def test_seed_quick_start_runs_unchanged(runtimes: list[ScheduledRuntime]) -> None:
    ask = fresh_registry().get("ask")
    # The milestone document's quick start, line for line.
    sr = create_scheduled_runtime()
    runtimes.append(sr)
    run_id, state = sr.run(ask)
    if state.status.value == "waiting":
        state = sr.respond(run_id, {"answer": "yes"})
    state = sr.tick(run_id)
    sr.stop()
    assert state.status == RunStatus.COMPLETED
    assert state.output == {"answer": {"answer": "yes"}}
    assert not sr.is_running


def test_one_second_wait_until_completes_on_its_own(runtimes: list[ScheduledRuntime]) -> None:
    sr = create_scheduled_runtime(registry=fresh_registry())
    runtimes.append(sr)
    started = time.monotonic()
    run_id, state = sr.run(sr.registry.get("timer"), vars={"delay": 1.0})
    assert state.status == RunStatus.WAITING
    done = sr.wait_for(run_id, timeout=10, until=lambda r: r.status == RunStatus.COMPLETED)
    assert time.monotonic() - started < 5.0  # generous: the seed's poll alone adds up to 1 s
    until = datetime.fromisoformat(done.output["until"]).timestamp()
    assert done.output["woke_at"] >= until  # never early
    assert done.output["woke_at"] - until < 3.0
    stats = sr.stats
    assert stats.timers_armed >= 1
    assert stats.runs_resumed >= 1


def test_events_move_the_counters(runtimes: list[ScheduledRuntime]) -> None:
    sr = create_scheduled_runtime(registry=fresh_registry())
    runtimes.append(sr)
    before = sr.stats
    run_id, _ = sr.run(sr.registry.get("event"), vars={"key": "k1"})
    done = sr.resume_event(run_id=run_id, wait_key="k1", payload={"v": 1})
    assert done.output == {"event": {"v": 1}}
    after = sr.stats
    assert after.events_accepted == before.events_accepted + 1
    assert after.events_applied == before.events_applied + 1
    assert after.runs_resumed == before.runs_resumed + 1
    assert after.runs_started == before.runs_started + 1


def test_callbacks_hear_resumes_and_failures(runtimes: list[ScheduledRuntime]) -> None:
    resumed: list[RunState] = []
    failed: list[tuple[str, Exception]] = []
    sr = create_scheduled_runtime(registry=fresh_registry(fails_once()),
                                  on_run_resumed=resumed.append,
                                  on_run_failed=lambda run_id, exc: failed.append((run_id, exc)))
    runtimes.append(sr)

    waiter, _ = sr.run(sr.registry.get("timer"), vars={"delay": 0.2})
    sr.wait_for(waiter, timeout=10, until=lambda r: r.status == RunStatus.COMPLETED)
    deadline = time.monotonic() + 5
    while waiter not in [s.run_id for s in resumed] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert waiter in [s.run_id for s in resumed]

    flaky = sr.start(workflow=sr.registry.get("fails_once"))  # ticked by the embedded pool
    done = sr.wait_for(flaky, timeout=10, until=lambda r: r.status == RunStatus.COMPLETED)
    assert done.output == {"tries": 2}
    assert [run_id for run_id, _ in failed] == [flaky]
    assert flaky in str(failed[0][1]) and "first try fails" in str(failed[0][1])
    assert sr.stats.tick_errors == 1


def test_event_sent_before_its_wait_is_applied_when_reached(runtimes: list[ScheduledRuntime]) -> None:
    sr = create_scheduled_runtime(registry=fresh_registry(timer_then_event(0.5)))
    runtimes.append(sr)
    run_id, state = sr.run(sr.registry.get("timer_then_event"))
    assert state.status == RunStatus.WAITING and state.current_node == "nap"

    handle = sr.resume_event(run_id=run_id, wait_key="go", payload={"early": True}, wait=False)
    assert isinstance(handle, RunHandle)
    assert sr.get_state(run_id).current_node == "nap"  # still on the timer: the event waits its turn

    done = handle.wait(timeout=10)
    assert done.status == RunStatus.COMPLETED
    assert done.output == {"got": {"early": True}}


def test_one_event_is_applied_to_one_wait_only(runtimes: list[ScheduledRuntime]) -> None:
    sr = create_scheduled_runtime(registry=fresh_registry())
    runtimes.append(sr)
    run_id, _ = sr.run(sr.registry.get("twice"))

    state = sr.resume_event(run_id=run_id, wait_key="k", payload={"n": 1})
    assert state.status == RunStatus.WAITING and state.current_node == "second"
    assert state.vars.get("a") == {"n": 1} and "b" not in state.vars

    # More deliveries of nothing new change nothing: the event is spent.
    sr.tick(run_id)
    sr.scheduler.poll_once()
    again = sr.get_state(run_id)
    assert again.current_node == "second" and "b" not in again.vars
    assert sr.stats.events_applied == 1

    done = sr.resume_event(run_id=run_id, wait_key="k", payload={"n": 2})
    assert done.output == {"a": {"n": 1}, "b": {"n": 2}}
    assert sr.stats.events_applied == 2


def test_unknown_workflow_is_reported_then_picked_up_once_registered(runtimes: list[ScheduledRuntime]) -> None:
    failed: list[tuple[str, Exception]] = []
    spec = far_timer("vanishing")
    store = InMemoryRunStore()
    sr = create_scheduled_runtime(run_store=store, registry=fresh_registry(spec),
                                  on_run_failed=lambda run_id, exc: failed.append((run_id, exc)))
    runtimes.append(sr)
    run_id, state = sr.run(spec)
    assert state.status == RunStatus.WAITING

    sr.registry.unregister("vanishing")
    state.waiting.until = _iso(-1)  # now due
    store.save(state)

    assert sr.scheduler.poll_once() == 0
    assert sr.get_state(run_id).status == RunStatus.WAITING  # kept, not failed
    stats = sr.stats
    assert stats.unknown_workflow >= 1
    assert any("vanishing" in e and run_id in e for e in stats.errors)
    assert failed and failed[0][0] == run_id
    assert "vanishing" in str(failed[0][1]) and run_id in str(failed[0][1])
    with pytest.raises(UnknownWorkflowError, match="vanishing") as info:
        sr.tick(run_id)
    assert run_id in str(info.value)

    sr.registry.register(spec)
    assert sr.scheduler.poll_once() == 1
    assert sr.get_state(run_id).status == RunStatus.COMPLETED


def test_second_runtime_without_the_workflow_says_so(runtimes: list[ScheduledRuntime]) -> None:
    spec = far_timer("only_in_first")
    store = InMemoryRunStore()
    first = create_scheduled_runtime(run_store=store, registry=fresh_registry(spec), auto_start=False)
    run_id, _ = first.run(spec)
    second = create_scheduled_runtime(run_store=store, registry=fresh_registry(), auto_start=False)
    attempts = (lambda: second.tick(run_id),
                lambda: second.resume_event(run_id=run_id, wait_key="any", payload={"x": 1}))
    for attempt in attempts:
        with pytest.raises(UnknownWorkflowError) as info:
            attempt()
        assert "only_in_first" in str(info.value) and run_id in str(info.value)
        assert isinstance(info.value, KeyError)
    # A timer wait has no wait_key: respond says so (the seed: "has no wait_key"), naming the run.
    with pytest.raises(RunNotWaitingError, match=f"{run_id}.*no wait_key"):
        second.respond(run_id, {"x": 1})
    assert first.get_state(run_id).status == RunStatus.WAITING
    assert second.scheduler.driver.coord.inbox.pending(run_id).events == []  # refused before the inbox


def test_wait_false_returns_a_handle(runtimes: list[ScheduledRuntime]) -> None:
    sr = create_scheduled_runtime(registry=fresh_registry())
    runtimes.append(sr)
    run_id, handle = sr.run(sr.registry.get("event"), vars={"key": "h"}, wait=False)
    assert isinstance(handle, RunHandle) and handle.run_id == run_id
    waiting = handle.wait(timeout=10)
    assert waiting.status == RunStatus.WAITING and waiting.waiting.wait_key == "h"

    handle = sr.resume_event(run_id=run_id, wait_key="h", payload={"v": 3}, wait=False)
    assert isinstance(handle, RunHandle)
    done = handle.wait(timeout=10)
    assert done.status == RunStatus.COMPLETED and done.output == {"event": {"v": 3}}
    assert handle.done()


def test_poll_once_returns_how_many_due_runs_it_resumed(runtimes: list[ScheduledRuntime]) -> None:
    spec = far_timer()
    store = InMemoryRunStore()
    sr = create_scheduled_runtime(run_store=store, registry=fresh_registry(spec), auto_start=False)
    ids = [sr.run(spec)[0] for _ in range(3)]
    sr.run(spec)  # a fourth, still an hour away
    for run_id in ids:
        state = store.load(run_id)
        state.waiting.until = _iso(-5)
        store.save(state)

    assert sr.scheduler.poll_once() == 3
    assert all(sr.get_state(r).status == RunStatus.COMPLETED for r in ids)
    assert sr.scheduler.poll_once() == 0
    assert sr.stats.runs_resumed == 3


def test_settings_apply_in_embedded_mode(runtimes: list[ScheduledRuntime]) -> None:
    sr = create_scheduled_runtime(registry=fresh_registry(), settings=Settings(max_payload_bytes=64))
    runtimes.append(sr)
    run_id, _ = sr.run(sr.registry.get("event"), vars={"key": "s"})
    from abstractruntime_celery import PayloadError

    with pytest.raises(PayloadError, match=run_id):
        sr.resume_event(run_id=run_id, wait_key="s", payload={"blob": "x" * 100})
    assert sr.get_state(run_id).status == RunStatus.WAITING
