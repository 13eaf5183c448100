"""Workflows of the adversarial tests in tests/test_adv_g_*.py.

Subprocess workers load them with ABSTRACTRUNTIME_CELERY_REGISTRY=tests.workflows_adv_g:registry
(every workflow here, of tests/workflows.py and of tests/workflows_regress_d.py), or with
``tests.workflows_adv_g:registry_without_two_events`` (the same, less ``ag-two-events``: a
worker of an older deploy). Side effects are counted in the fx Redis hash named by
vars["fx"] (tests.workflows.bump).
"""

from __future__ import annotations

import time
from typing import Any

from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec

from tests.workflows import _fx, bump
from tests.workflows_regress_d import build as build_regress_d


# ag-slow-flaky: a slow first node (vars.sleep seconds), then a node that raises the first
# vars.fail_times times it runs (counted under "tries"), then completes.
def slow_first(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "slow_started")
    time.sleep(float(run.vars.get("sleep", 3.0)))
    bump(run, "slow_done")
    return StepPlan(node_id="slow", next_node="flaky")


def flaky_then_done(run: RunState, ctx: Any) -> StepPlan:
    tries = bump(run, "tries")
    if tries <= int(run.vars.get("fail_times", 1)):
        raise RuntimeError(f"flaky failure {tries}")
    return StepPlan(node_id="flaky", complete_output={"tries": tries})


# ag-block-then-sync-spawn: a node that, once running, blocks until the test sets the Redis
# key "<fx>:go" (at most vars.block_s seconds), then spawns a SYNCHRONOUS child (ticked inside
# this tick) of workflow vars.child (default rd-nap: it waits vars.child_delay seconds on a
# timer, then counts "woke" and completes).
def block_then_sync_spawn(run: RunState, ctx: Any) -> StepPlan:
    key = run.vars.get("fx")
    bump(run, "blocked")
    deadline = time.monotonic() + float(run.vars.get("block_s", 60.0))
    while key and not _fx().exists(f"{key}:go") and time.monotonic() < deadline:
        time.sleep(0.05)
    bump(run, "unblocked")
    child_vars = {"fx": key, "delay": float(run.vars.get("child_delay", 3.0))}
    payload = {"workflow_id": run.vars.get("child", "rd-nap"), "vars": child_vars}
    return StepPlan(node_id="block", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child"),
                    next_node="after")


def after(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "after")
    return StepPlan(node_id="after", complete_output={"child": run.vars.get("child")})


# ag-two-events: waits on event "k1", then on event "k2", then completes (counting each step).
def first_event(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "waiting_k1")
    return StepPlan(node_id="first", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "k1"}, result_key="e1"),
                    next_node="second")


def second_event(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "waiting_k2")
    return StepPlan(node_id="second", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "k2"}, result_key="e2"),
                    next_node="end")


def two_events_end(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "end")
    return StepPlan(node_id="end", complete_output={"e1": run.vars.get("e1"), "e2": run.vars.get("e2")})


WORKFLOWS = [
    WorkflowSpec("ag-slow-flaky", "slow", {"slow": slow_first, "flaky": flaky_then_done}),
    WorkflowSpec("ag-block-then-sync-spawn", "block", {"block": block_then_sync_spawn, "after": after}),
    WorkflowSpec("ag-two-events", "first", {"first": first_event, "second": second_event, "end": two_events_end}),
]


def build(without: tuple[str, ...] = ()) -> Any:
    reg = build_regress_d()
    for spec in WORKFLOWS:
        if spec.workflow_id not in without:
            reg.register(spec)
    return reg


registry = build()
registry_without_two_events = build(without=("ag-two-events",))


# ag-loop: vars.n steps of vars.sleep seconds each (one node, looping on itself).
def loop_step(run: RunState, ctx: Any) -> StepPlan:
    time.sleep(float(run.vars.get("sleep", 0.1)))
    run.vars["i"] = int(run.vars.get("i", 0)) + 1
    if run.vars["i"] >= int(run.vars.get("n", 10)):
        return StepPlan(node_id="step", complete_output={"i": run.vars["i"]})
    return StepPlan(node_id="step", next_node="step")


LOOP = WorkflowSpec("ag-loop", "step", {"step": loop_step})
registry.register(LOOP)
registry_without_two_events.register(LOOP)
