"""Workflows of the CLI tests (tests/test_cli_ops.py): a gate that fails until a flag in
Redis is set, a parent waiting on a gate child, and an event wait."""

from __future__ import annotations

import os
from typing import Any

import redis
from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec
from abstractruntime.scheduler.registry import WorkflowRegistry

FX_URL = os.environ.get("ARC_TEST_FX_URL", "redis://127.0.0.1:6379/14")


def _open(run: RunState) -> bool:
    key = run.vars.get("flag")
    return bool(key) and redis.Redis.from_url(FX_URL).get(key) is not None


def first(run: RunState, ctx: Any) -> StepPlan:
    run.vars["passed_first"] = int(run.vars.get("passed_first", 0)) + 1
    return StepPlan(node_id="first", next_node="gate")


def gate(run: RunState, ctx: Any) -> StepPlan:
    if not _open(run):
        raise RuntimeError("gate closed")
    return StepPlan(node_id="gate", complete_output={"ok": True, "passed_first": run.vars.get("passed_first")})


def spawn(run: RunState, ctx: Any) -> StepPlan:
    payload = {"workflow_id": "gate", "vars": {"flag": run.vars.get("flag")}, "async": True, "wait": True}
    return StepPlan(node_id="spawn", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child"),
                    next_node="joined")


def joined(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="joined", complete_output={"child": run.vars.get("child")})


def wait_event(run: RunState, ctx: Any) -> StepPlan:
    payload = {"wait_key": run.vars.get("key", "approval")}
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_EVENT, payload, result_key="event"),
                    next_node="done")


def done(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="done", complete_output={"event": run.vars.get("event")})


registry = WorkflowRegistry()
for spec in (WorkflowSpec("gate", "first", {"first": first, "gate": gate}),
             WorkflowSpec("gated-parent", "spawn", {"spawn": spawn, "joined": joined}),
             WorkflowSpec("approval", "wait", {"wait": wait_event, "done": done})):
    registry.register(spec)
