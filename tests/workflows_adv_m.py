"""Workflows of the adversarial tests in tests/test_adv_m_*.py (every workflow of
tests/workflows_adv_l.py too). Side effects are counted in the fx Redis hash named by
vars["fx"] (tests.workflows.bump)."""

from __future__ import annotations

from typing import Any

from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec

from tests.workflows_adv_i import done, fail_node, wait_later
from tests.workflows_adv_l import build as build_adv_l


# am-go-then-fail: waits on event "go", then "fail" raises while vars.fail_times tries have
# not been made (counted under "tries"; always, by default), then waits on "later", completes.
def wait_go(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="go", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "go"}, result_key="go"),
                    next_node="fail")


WORKFLOWS = [WorkflowSpec("am-go-then-fail", "go", {"go": wait_go, "fail": fail_node, "wait": wait_later,
                                                    "done": done})]


def build() -> Any:
    reg = build_adv_l()
    for spec in WORKFLOWS:
        reg.register(spec)
    return reg


registry = build()
