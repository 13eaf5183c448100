"""Workflows of the adversarial tests in tests/test_adv_f_*.py.

Subprocess workers load them with ABSTRACTRUNTIME_CELERY_REGISTRY=tests.workflows_adv_f:registry
(or :gated_registry); the registry also holds every workflow of tests/workflows_regress_c.py
and tests/workflows_regress_d.py. Side effects are counted in the fx Redis hash named by
vars["fx"] (tests.workflows.bump).
"""

from __future__ import annotations

import os
import time
from typing import Any

from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec
from abstractruntime.scheduler.registry import WorkflowRegistry

from tests import workflows_regress_c as rc
from tests import workflows_regress_d as rd
from tests.workflows import _fx, bump


# af-loop: waits on vars.key (default "k") again and again, keeping every payload it gets in
# vars.got, until it has vars.n of them; then it completes with the list.
def loop_wait(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": run.vars.get("key", "k")},
                                                  result_key="ev"), next_node="got")


def loop_got(run: RunState, ctx: Any) -> StepPlan:
    got = list(run.vars.get("got") or [])
    got.append(run.vars.get("ev"))
    run.vars["got"] = got
    bump(run, "got")
    if len(got) >= int(run.vars.get("n", 2)):
        return StepPlan(node_id="got", complete_output={"got": got})
    return StepPlan(node_id="got", next_node="wait")


# af-loop-ext: as af-loop, but how many events it needs is read, each time, from the fx Redis
# key vars.n_key when set (an outside fact a node looks at: "is the order fully paid?").
def loop_got_ext(run: RunState, ctx: Any) -> StepPlan:
    got = list(run.vars.get("got") or [])
    got.append(run.vars.get("ev"))
    run.vars["got"] = got
    bump(run, "got")
    n = int(_fx().get(str(run.vars.get("n_key"))) or run.vars.get("n", 2))
    if len(got) >= n:
        return StepPlan(node_id="got", complete_output={"got": got})
    return StepPlan(node_id="got", next_node="wait")


# af-sync-parent: a synchronous child (AbstractRuntime ticks it inside the parent's tick) of
# workflow vars.child (default af-child); the parent then finishes with the child's result.
def sync_spawn(run: RunState, ctx: Any) -> StepPlan:
    payload = {"workflow_id": run.vars.get("child", "af-child"),
               "vars": {"fx": run.vars.get("fx"), "gate": run.vars.get("child_gate")}}
    return StepPlan(node_id="spawn", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child"),
                    next_node="joined")


def joined(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "joined")
    return StepPlan(node_id="joined", complete_output={"child": run.vars.get("child")})


# af-child: one node that (optionally) waits at the gate vars.gate, counts itself, and completes.
def child_only(run: RunState, ctx: Any) -> StepPlan:
    gate = run.vars.get("gate")
    if gate:
        rc.Gate(str(gate)).pass_through()
    bump(run, "ran")
    return StepPlan(node_id="only", complete_output={"child_ran": True})


# af-two: a first node that counts itself and moves on, then a second that counts and completes
# (tick_max_steps=1 makes the run go RUNNING from one tick to the next).
def two_first(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "first")
    return StepPlan(node_id="first", next_node="second")


def two_second(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "second")
    return StepPlan(node_id="second", complete_output={"done": True})


# af-ask: one ASK_USER wait (the seed's respond() target), then finish with the answer.
def ask(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="ask", effect=Effect(EffectType.ASK_USER, {"prompt": "?", "wait_key": "answer"},
                                                 result_key="answer"), next_node="answered")


def answered(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "answered")
    return StepPlan(node_id="answered", complete_output={"answer": run.vars.get("answer")})


# af-slow: a node that sleeps vars.sleep seconds (a worker can be frozen or killed in it),
# counting its starts and ends, then waits on "k" and finishes with the payload.
def slow(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "slow_started")
    time.sleep(float(run.vars.get("sleep", 2.0)))
    bump(run, "slow_finished")
    return StepPlan(node_id="slow", next_node="wait")


def slow_wait(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "k"}, result_key="ev"),
                    next_node="done")


def slow_done(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "done")
    return StepPlan(node_id="done", complete_output={"ev": run.vars.get("ev")})


WORKFLOWS = [
    WorkflowSpec("af-loop", "wait", {"wait": loop_wait, "got": loop_got}),
    WorkflowSpec("af-loop-ext", "wait", {"wait": loop_wait, "got": loop_got_ext}),
    WorkflowSpec("af-sync-parent", "spawn", {"spawn": sync_spawn, "joined": joined}),
    WorkflowSpec("af-child", "only", {"only": child_only}),
    WorkflowSpec("af-two", "first", {"first": two_first, "second": two_second}),
    WorkflowSpec("af-ask", "ask", {"ask": ask, "answered": answered}),
    WorkflowSpec("af-slow", "slow", {"slow": slow, "wait": slow_wait, "done": slow_done}),
]


def build_registry(cls: type = WorkflowRegistry, *args: Any) -> WorkflowRegistry:
    reg = cls(*args)
    for spec in rd.WORKFLOWS + rc.WORKFLOWS + WORKFLOWS:
        reg.register(spec)
    return reg


registry = build_registry()


def gated_registry() -> WorkflowRegistry:
    """For worker subprocesses: the gate is named after the key prefix they are given."""
    prefix = os.environ.get("ABSTRACTRUNTIME_CELERY_KEY_PREFIX", "arc:")
    return build_registry(rc.GatedRegistry, rc.registry_gate_name(prefix))


def fx_count(fx_key: str, run_id: str, name: str) -> int:
    return int(_fx().hget(fx_key, f"{run_id}:{name}") or 0)
