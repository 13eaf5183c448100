"""Workflows of the adversarial tests in tests/test_adv_l_*.py (every workflow of
tests/workflows_adv_k.py too). Side effects are counted in the fx Redis hash named by
vars["fx"] (tests.workflows.bump). In-process tests only for ``al-gated`` (its hook is a
module global)."""

from __future__ import annotations

from typing import Any, Callable, Optional

from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec

from tests.workflows import bump
from tests.workflows_adv_k import build as build_adv_k

#: Called by node "a" of al-gated (if set) with the run: a test blocks or raises in it.
HOOK: Optional[Callable[[RunState], None]] = None


# al-gated: node "a" (counted under "a"; calls HOOK), then waits on event "go", then completes.
def gated_a(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "a")
    if HOOK is not None:
        HOOK(run)
    return StepPlan(node_id="a", next_node="wait")


def gated_wait(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "go"}, result_key="go"),
                    next_node="done")


def gated_done(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "done")
    return StepPlan(node_id="done", complete_output={"go": run.vars.get("go")})


# al-forget-then-wait: spawns an async child without waiting for it (rd-fire-and-forget, which
# itself spawns an "event" run without waiting and completes), then waits on event "go". So:
# a WAITING root, a COMPLETED child, a WAITING grandchild.
def forget_then_wait(run: RunState, ctx: Any) -> StepPlan:
    payload = {"workflow_id": "rd-fire-and-forget", "vars": {"fx": run.vars.get("fx"), "child": "event"},
               "async": True}
    return StepPlan(node_id="spawn", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child"),
                    next_node="wait")


WORKFLOWS = [WorkflowSpec("al-gated", "a", {"a": gated_a, "wait": gated_wait, "done": gated_done}),
             WorkflowSpec("al-forget-then-wait", "spawn", {"spawn": forget_then_wait, "wait": gated_wait,
                                                           "done": gated_done})]


def build() -> Any:
    reg = build_adv_k()
    for spec in WORKFLOWS:
        reg.register(spec)
    return reg


registry = build()
