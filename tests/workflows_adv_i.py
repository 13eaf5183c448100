"""Workflows of the adversarial tests in tests/test_adv_i_*.py.

Subprocess workers load them with ABSTRACTRUNTIME_CELERY_REGISTRY=tests.workflows_adv_i:registry
(every workflow here and of tests/workflows_adv_h.py). Side effects are counted in the fx
Redis hash named by vars["fx"] (tests.workflows.bump).
"""

from __future__ import annotations

from typing import Any

from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec

from tests.workflows import bump
from tests.workflows_adv_h import build as build_adv_h


# ai-fail-then-wait: "fail" raises while vars.fail_times tries have not been made (counting
# them under "tries"; always, by default), then the run waits on the event "later".
def fail_node(run: RunState, ctx: Any) -> StepPlan:
    tries = bump(run, "tries")
    if tries <= int(run.vars.get("fail_times", 1_000_000)):
        raise RuntimeError(f"downstream is down (try {tries})")
    return StepPlan(node_id="fail", next_node="wait")


def wait_later(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "later"}, result_key="ev"),
                    next_node="done")


def done(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="done", complete_output={"ev": run.vars.get("ev")})


# ai-flaky-two: node "a" fails vars.a_fails times, then goes on to "b" (in the same tick);
# "b" fails vars.b_fails times, then completes. Tries are counted under "a" and "b".
def flaky_a(run: RunState, ctx: Any) -> StepPlan:
    if bump(run, "a") <= int(run.vars.get("a_fails", 2)):
        raise RuntimeError("a is down")
    return StepPlan(node_id="a", next_node="b")


def flaky_b(run: RunState, ctx: Any) -> StepPlan:
    if bump(run, "b") <= int(run.vars.get("b_fails", 1)):
        raise RuntimeError("b is down")
    return StepPlan(node_id="b", complete_output={"ok": True})


WORKFLOWS = [
    WorkflowSpec("ai-flaky-two", "a", {"a": flaky_a, "b": flaky_b}),
    WorkflowSpec("ai-fail-then-wait", "fail", {"fail": fail_node, "wait": wait_later, "done": done}),
]


def build() -> Any:
    reg = build_adv_h()
    for spec in WORKFLOWS:
        reg.register(spec)
    return reg


registry = build()
