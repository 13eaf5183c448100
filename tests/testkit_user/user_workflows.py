"""Workflows a user of the test kit might write. tests/test_testkit.py copies this
directory's files to a temporary project (``user_*.py`` as ``test_*.py``, so the
project's own run never collects them) and runs pytest there, as a user would."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec


def _now() -> datetime:
    return datetime.now(timezone.utc)


# nap: wait vars.hours (24) from the node's own clock, then record when it woke.
def nap_start(run: RunState, ctx: Any) -> StepPlan:
    until = (_now() + timedelta(hours=float(run.vars.get("hours", 24)))).isoformat()
    run.vars["until"] = until
    return StepPlan(node_id="start", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}), next_node="done")


def nap_done(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="done", complete_output={"until": run.vars["until"], "woke": _now().isoformat()})


nap = WorkflowSpec(workflow_id="nap", entry_node="start", nodes={"start": nap_start, "done": nap_done})


# drip: three hourly waits in a row, each computed when the previous one fired.
def drip_wait(run: RunState, ctx: Any) -> StepPlan:
    if run.vars.get("drops", 0) >= 3:
        return StepPlan(node_id="wait", complete_output={"drops": run.vars["drops"], "at": run.vars["at"]})
    until = (_now() + timedelta(hours=1)).isoformat()
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}), next_node="drop")


def drip_drop(run: RunState, ctx: Any) -> StepPlan:
    run.vars["drops"] = run.vars.get("drops", 0) + 1
    run.vars.setdefault("at", []).append(_now().isoformat())
    return StepPlan(node_id="drop", next_node="wait")


drip = WorkflowSpec(workflow_id="drip", entry_node="wait", nodes={"wait": drip_wait, "drop": drip_drop})


# approval: wait for the "approval" event, then finish with it.
def approval_ask(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="ask", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "approval"},
                                                 result_key="answer"), next_node="decide")


def approval_decide(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="decide", complete_output={"approved": bool((run.vars.get("answer") or {}).get("ok"))})


approval = WorkflowSpec(workflow_id="approval", entry_node="ask",
                        nodes={"ask": approval_ask, "decide": approval_decide})


# trial: an approval, then a child nap of a day; finish with the child's output.
def trial_ask(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="ask", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "go"}, result_key="go"),
                    next_node="spawn")


def trial_spawn(run: RunState, ctx: Any) -> StepPlan:
    payload = {"workflow_id": "nap", "vars": {"hours": 24}, "async": True, "wait": True}
    return StepPlan(node_id="spawn", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child"),
                    next_node="joined")


def trial_joined(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="joined", complete_output={"child": run.vars.get("child")})


trial = WorkflowSpec(workflow_id="trial", entry_node="ask",
                     nodes={"ask": trial_ask, "spawn": trial_spawn, "joined": trial_joined})

ALL = [nap, drip, approval, trial]
