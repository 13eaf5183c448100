"""Workflows of the adversarial tests in tests/test_adv_r_*.py."""

from __future__ import annotations

from typing import Any

from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec
from abstractruntime.scheduler.registry import WorkflowRegistry


# ar-ev-spawn: waits on event "k", then spawns an async child (ar-wait) and waits on it, then
# completes with the child's result.
def ev_wait(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "k"}, result_key="ev"),
                    next_node="spawn")


def ev_spawn(run: RunState, ctx: Any) -> StepPlan:
    payload = {"workflow_id": run.vars.get("child", "ar-wait"), "vars": {}, "async": True, "wait": True}
    return StepPlan(node_id="spawn", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child"),
                    next_node="done")


def ev_done(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="done", complete_output={"child": run.vars.get("child")})


# ar-wait: waits on event "c", then completes with it.
def c_wait(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "c"}, result_key="ev"),
                    next_node="done")


def c_done(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="done", complete_output={"ev": run.vars.get("ev")})


WORKFLOWS = [
    WorkflowSpec("ar-ev-spawn", "wait", {"wait": ev_wait, "spawn": ev_spawn, "done": ev_done}),
    WorkflowSpec("ar-wait", "wait", {"wait": c_wait, "done": c_done}),
]


def build_registry() -> WorkflowRegistry:
    registry = WorkflowRegistry()
    for spec in WORKFLOWS:
        registry.register(spec)
    return registry


registry = build_registry()
