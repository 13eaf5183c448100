"""The demo workflow: a 2 s timer, an event the demo answers, and a child run.

Workers that run the demo through a broker load it with
``ABSTRACTRUNTIME_CELERY_REGISTRY=abstractruntime_celery.demo:registry``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec
from abstractruntime.scheduler.registry import WorkflowRegistry

APPROVAL_KEY = "demo:approval"


def _in(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


def nap(run: RunState, ctx: Any) -> StepPlan:
    run.vars["napped_until"] = _in(float(run.vars.get("nap_s", 2.0)))
    return StepPlan(node_id="nap", effect=Effect(EffectType.WAIT_UNTIL, {"until": run.vars["napped_until"]}),
                    next_node="approve")


def approve(run: RunState, ctx: Any) -> StepPlan:
    key = f"{APPROVAL_KEY}:{run.run_id}"
    return StepPlan(node_id="approve", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": key},
                                                     result_key="approval"), next_node="delegate")


def delegate(run: RunState, ctx: Any) -> StepPlan:
    payload = {"workflow_id": "demo_child", "vars": {"n": 10}, "async": True, "wait": True}
    return StepPlan(node_id="delegate", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child"),
                    next_node="finish")


def finish(run: RunState, ctx: Any) -> StepPlan:
    child = run.vars.get("child") or {}
    return StepPlan(node_id="finish", complete_output={
        "approved_by": (run.vars.get("approval") or {}).get("by"),
        "child_sum": (child.get("output") or {}).get("sum"),
    })


def child_pause(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="pause", effect=Effect(EffectType.WAIT_UNTIL, {"until": _in(0.5)}), next_node="add")


def child_add(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="add", complete_output={"sum": sum(range(int(run.vars.get("n", 10)) + 1))})


demo_workflow = WorkflowSpec("demo", "nap", {"nap": nap, "approve": approve, "delegate": delegate, "finish": finish})
demo_child = WorkflowSpec("demo_child", "pause", {"pause": child_pause, "add": child_add})


def build_registry() -> WorkflowRegistry:
    reg = WorkflowRegistry()
    reg.register(demo_workflow)
    reg.register(demo_child)
    return reg


registry = build_registry()
