"""Workflows of the adversarial tests in tests/test_adv_j_*.py.

Subprocess workers load them with ABSTRACTRUNTIME_CELERY_REGISTRY=tests.workflows_adv_j:registry
(every workflow here and of tests/workflows_adv_i.py). Side effects are counted in the fx
Redis hash named by vars["fx"] (tests.workflows.bump).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec

from tests.workflows import bump
from tests.workflows_adv_i import build as build_adv_i


def _iso_in(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


# aj-nap-then-fail: wait until now + vars.delay (WAIT_UNTIL), then "fail" raises while
# vars.fail_times tries have not been made (always, by default; counted under "tries"),
# then the run waits on the event "later" and completes.
def nap(run: RunState, ctx: Any) -> StepPlan:
    until = run.vars.get("until") or _iso_in(float(run.vars.get("delay", 0.3)))
    run.vars["until"] = until
    return StepPlan(node_id="nap", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}), next_node="fail")


def fail_node(run: RunState, ctx: Any) -> StepPlan:
    tries = bump(run, "tries")
    if tries <= int(run.vars.get("fail_times", 1_000_000)):
        raise RuntimeError(f"downstream is down (try {tries})")
    return StepPlan(node_id="fail", next_node="wait")


def wait_later(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "later"}, result_key="ev"),
                    next_node="done")


def done(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "done")
    return StepPlan(node_id="done", complete_output={"ev": run.vars.get("ev")})


# aj-deadline-then-fail: wait on event "first" with a deadline of vars.deadline_s; on the
# timeout (or the event) "fail" runs, as above.
def wait_first(run: RunState, ctx: Any) -> StepPlan:
    payload = {"wait_key": "first", "until": _iso_in(float(run.vars.get("deadline_s", 0.3)))}
    return StepPlan(node_id="first", effect=Effect(EffectType.WAIT_EVENT, payload, result_key="first"),
                    next_node="fail")


# aj-sync-parent: spawns a synchronous child (vars.child, default ai-fail-then-wait, whose
# first node always fails), ticked inline in the parent's tick; then completes with its result.
def sync_spawn(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "spawn")
    payload = {"workflow_id": run.vars.get("child", "ai-fail-then-wait"), "vars": {"fx": run.vars.get("fx")}}
    return StepPlan(node_id="spawn", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child"),
                    next_node="joined")


def joined(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="joined", complete_output={"child": run.vars.get("child")})


WORKFLOWS = [
    WorkflowSpec("aj-sync-parent", "spawn", {"spawn": sync_spawn, "joined": joined}),
    WorkflowSpec("aj-nap-then-fail", "nap", {"nap": nap, "fail": fail_node, "wait": wait_later, "done": done}),
    WorkflowSpec("aj-deadline-then-fail", "first",
                 {"first": wait_first, "fail": fail_node, "wait": wait_later, "done": done}),
]


def build() -> Any:
    reg = build_adv_i()
    for spec in WORKFLOWS:
        reg.register(spec)
    return reg


registry = build()
