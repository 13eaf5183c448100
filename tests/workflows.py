"""Workflows the tests (and the subprocess workers they start) share.

Workers load them with ABSTRACTRUNTIME_CELERY_REGISTRY=tests.workflows:registry.
Side effects that tests count go to Redis under the run's own key prefix
(vars["fx"]), so parallel tests never see each other's numbers.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import redis
from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec
from abstractruntime.scheduler.registry import WorkflowRegistry

FX_URL = os.environ.get("ARC_TEST_FX_URL") or f"{os.environ.get('ARC_TEST_REDIS', 'redis://127.0.0.1:6379')}/14"


def _fx() -> redis.Redis:
    return redis.Redis.from_url(FX_URL, decode_responses=True)


def bump(run: RunState, name: str) -> int:
    """Count a side effect of ``run`` (tests read it back to prove once-only)."""
    key = run.vars.get("fx")
    if not key:
        return 0
    return int(_fx().hincrby(key, f"{run.run_id}:{name}", 1))


def _iso_in(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


# timer: wait until vars.until (or now + vars.delay), then finish recording when it woke.
def timer_wait(run: RunState, ctx: Any) -> StepPlan:
    until = run.vars.get("until") or _iso_in(float(run.vars.get("delay", 1.0)))
    run.vars["until"] = until
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}), next_node="done")


def timer_done(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "done")
    return StepPlan(node_id="done", complete_output={"until": run.vars["until"], "woke_at": time.time()})


# event: wait on vars.key, then finish with the payload.
def event_wait(run: RunState, ctx: Any) -> StepPlan:
    payload: dict[str, Any] = {"wait_key": run.vars.get("key", f"evt:{run.run_id}")}
    if run.vars.get("deadline_s"):
        payload["until"] = _iso_in(float(run.vars["deadline_s"]))
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_EVENT, payload, result_key="event"),
                    next_node="done")


def event_done(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "done")
    return StepPlan(node_id="done", complete_output={"event": run.vars.get("event")})


# twice: two event waits on the same key in a row (an event must not be applied twice).
def twice_first(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="first", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "k"}, result_key="a"),
                    next_node="second")


def twice_second(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="second", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "k"}, result_key="b"),
                    next_node="end")


def twice_end(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="end", complete_output={"a": run.vars.get("a"), "b": run.vars.get("b")})


# ask: ASK_USER, then finish with the answer.
def ask(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "Continue?"}, result_key="answer"),
                    next_node="answered")


def answered(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="answered", complete_output={"answer": run.vars.get("answer")})


# parent/child: an async child that waits on a timer; the parent resumes with its output.
def parent_spawn(run: RunState, ctx: Any) -> StepPlan:
    child_vars = {"delay": run.vars.get("child_delay", 0.5), "fx": run.vars.get("fx")}
    payload = {"workflow_id": run.vars.get("child", "timer"), "vars": child_vars,
               "async": bool(run.vars.get("async", True)), "wait": True}
    return StepPlan(node_id="spawn", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child"),
                    next_node="joined")


def parent_joined(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "joined")
    return StepPlan(node_id="joined", complete_output={"child": run.vars.get("child")})


# broken child: an effect with no handler makes the run FAILED.
def broken(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="broken", effect=Effect(EffectType.LLM_CALL, {"prompt": "x"}), next_node=None)


# listener / emitter: EMIT_EVENT resumes the listener, which the driver must tick.
def listen(run: RunState, ctx: Any) -> StepPlan:
    payload = {"name": run.vars.get("name", "ping"), "scope": "global"}
    return StepPlan(node_id="listen", effect=Effect(EffectType.WAIT_EVENT, payload, result_key="heard"),
                    next_node="heard")


def heard(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "heard")
    return StepPlan(node_id="heard", complete_output={"heard": run.vars.get("heard")})


def emit(run: RunState, ctx: Any) -> StepPlan:
    payload = {"name": run.vars.get("name", "ping"), "scope": "global", "payload": {"n": 1}}
    return StepPlan(node_id="emit", effect=Effect(EffectType.EMIT_EVENT, payload, result_key="emitted"),
                    next_node="emitted")


def emitted(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="emitted", complete_output={"emitted": run.vars.get("emitted")})


# slow: a node that takes vars.sleep seconds and counts how often it ran.
def slow_work(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "work_started")
    time.sleep(float(run.vars.get("sleep", 1.0)))
    bump(run, "work_done")
    return StepPlan(node_id="work", next_node="finish")


def slow_finish(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "finish")
    return StepPlan(node_id="finish", complete_output={"ok": True})


# flaky: raises until it has been tried vars.fail_times times.
def flaky(run: RunState, ctx: Any) -> StepPlan:
    tries = bump(run, "tries")
    if tries <= int(run.vars.get("fail_times", 1)):
        raise RuntimeError(f"flaky failure {tries}")
    return StepPlan(node_id="flaky", complete_output={"tries": tries})


# steps: vars.n pure transitions (more than max_steps: the run is re-enqueued).
def step(run: RunState, ctx: Any) -> StepPlan:
    run.vars["i"] = int(run.vars.get("i", 0)) + 1
    if run.vars["i"] >= int(run.vars.get("n", 150)):
        return StepPlan(node_id="step", complete_output={"i": run.vars["i"]})
    return StepPlan(node_id="step", next_node="step")


WORKFLOWS = [
    WorkflowSpec("timer", "wait", {"wait": timer_wait, "done": timer_done}),
    WorkflowSpec("event", "wait", {"wait": event_wait, "done": event_done}),
    WorkflowSpec("twice", "first", {"first": twice_first, "second": twice_second, "end": twice_end}),
    WorkflowSpec("ask", "ask", {"ask": ask, "answered": answered}),
    WorkflowSpec("parent", "spawn", {"spawn": parent_spawn, "joined": parent_joined}),
    WorkflowSpec("broken", "broken", {"broken": broken}),
    WorkflowSpec("listener", "listen", {"listen": listen, "heard": heard}),
    WorkflowSpec("emitter", "emit", {"emit": emit, "emitted": emitted}),
    WorkflowSpec("slow", "work", {"work": slow_work, "finish": slow_finish}),
    WorkflowSpec("flaky", "flaky", {"flaky": flaky}),
    WorkflowSpec("steps", "step", {"step": step}),
]


def build_registry() -> WorkflowRegistry:
    reg = WorkflowRegistry()
    for spec in WORKFLOWS:
        reg.register(spec)
    return reg


registry = build_registry()


# timer-then-event: a timer of vars.delay seconds, then an event wait on vars.key. An event
# sent while the timer runs must wait in the inbox and be applied once the event wait is reached.
def nap(run: RunState, ctx: Any) -> StepPlan:
    until = run.vars.get("until") or _iso_in(float(run.vars.get("delay", 1.0)))
    run.vars["until"] = until
    return StepPlan(node_id="nap", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}), next_node="listen")


def nap_listen(run: RunState, ctx: Any) -> StepPlan:
    payload = {"wait_key": run.vars.get("key", f"evt:{run.run_id}")}
    return StepPlan(node_id="listen", effect=Effect(EffectType.WAIT_EVENT, payload, result_key="event"),
                    next_node="done")


TIMER_THEN_EVENT = WorkflowSpec("timer-then-event", "nap", {"nap": nap, "listen": nap_listen, "done": event_done})
WORKFLOWS.append(TIMER_THEN_EVENT)
registry.register(TIMER_THEN_EVENT)


# tool: a TOOL_CALLS effect that only a worker configured with runtime_options can run.
def use_tool(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="tool", effect=Effect(EffectType.TOOL_CALLS, {"tool": "double", "x": 21},
                                                  result_key="tool"), next_node="tooled")


def tooled(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="tooled", complete_output={"tool": run.vars.get("tool")})


def runtime_options() -> dict[str, Any]:
    """Extra Runtime kwargs for workers (settings.runtime_options = tests.workflows:runtime_options)."""
    from abstractruntime.core.runtime import EffectOutcome

    def double(run: RunState, effect: Effect, default_next_node: Any) -> Any:
        return EffectOutcome.completed({"value": effect.payload["x"] * 2})

    return {"effect_handlers": {EffectType.TOOL_CALLS: double}}


registry.register(WorkflowSpec("tool", "tool", {"tool": use_tool, "tooled": tooled}))


# gated-timer: the first node counts "gate_reached" and holds the tick (and its lease) until
# the test opens the gate (fx field "<run>:open"), then waits vars.delay seconds from then.
def gated_wait(run: RunState, ctx: Any) -> StepPlan:
    if "until" not in run.vars:
        bump(run, "gate_reached")
        deadline = time.monotonic() + float(run.vars.get("gate_s", 10.0))
        while not _fx().hexists(run.vars["fx"], f"{run.run_id}:open") and time.monotonic() < deadline:
            time.sleep(0.02)
    return timer_wait(run, ctx)


GATED_TIMER = WorkflowSpec("gated-timer", "wait", {"wait": gated_wait, "done": timer_done})
WORKFLOWS.append(GATED_TIMER)
registry.register(GATED_TIMER)
