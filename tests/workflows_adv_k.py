"""Workflows of the adversarial tests in tests/test_adv_k_*.py (every workflow of
tests/workflows_regress_d.py too). Side effects are counted in the fx Redis hash named by
vars["fx"] (tests.workflows.bump)."""

from __future__ import annotations

from typing import Any

from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec

from tests.workflows_regress_d import build as build_regress_d


# ak-tree: spawns one async child it waits on: another ak-tree with vars.levels - 1, or, at
# the last level, the "event" workflow (it waits on an event). So levels=2 is a run with a
# child and a grandchild, all waiting.
def tree_spawn(run: RunState, ctx: Any) -> StepPlan:
    levels = int(run.vars.get("levels", 1))
    child = "ak-tree" if levels > 1 else "event"
    payload = {"workflow_id": child, "vars": {"fx": run.vars.get("fx"), "levels": levels - 1},
               "async": True, "wait": True}
    return StepPlan(node_id="spawn", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child"),
                    next_node="joined")


def joined(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="joined", complete_output={"child": run.vars.get("child")})


WORKFLOWS = [WorkflowSpec("ak-tree", "spawn", {"spawn": tree_spawn, "joined": joined})]


def build() -> Any:
    reg = build_regress_d()
    for spec in WORKFLOWS:
        reg.register(spec)
    return reg


registry = build()
