"""Workflows of the regression tests in tests/test_regress_*.py (sweep, starts, children).

Subprocess workers load them with ABSTRACTRUNTIME_CELERY_REGISTRY=tests.workflows_regress_d:registry;
the registry also holds every workflow of tests/workflows.py. Side effects are counted in
the fx Redis hash named by vars["fx"] (tests.workflows.bump), under the run's id or, for
counts that must survive a run id changing between deliveries, under the workflow's name.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec

from tests.workflows import _fx, build_registry, bump


def bump_global(run: RunState, name: str) -> int:
    """Count a side effect under a name that does not contain the run's id."""
    key = run.vars.get("fx")
    if not key:
        return 0
    return int(_fx().hincrby(key, name, 1))


# rd-quick: one node that counts itself and completes.
def quick(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "ran")
    return StepPlan(node_id="quick", complete_output={"ran": True})


# rd-pid: a first node that only moves on (so the run is in the store, committed, before
# the next node starts), then a node that records the pid of the process running it,
# sleeps vars.sleep seconds (long enough for a test to SIGKILL that process), and completes.
def pid_prepare(run: RunState, ctx: Any) -> StepPlan:
    bump_global(run, "pid:prepared")
    return StepPlan(node_id="prepare", next_node="work")


def pid_node(run: RunState, ctx: Any) -> StepPlan:
    key = run.vars.get("fx")
    if key:
        _fx().rpush(f"{key}:pids", str(os.getpid()))
    bump_global(run, "pid:started")
    time.sleep(float(run.vars.get("sleep", 3.0)))
    bump_global(run, "pid:finished")
    return StepPlan(node_id="work", complete_output={"pid": os.getpid()})


# rd-nonce-parent: spawns an async child (waited on) whose vars hold a fresh uuid and the
# time: a spawn node run again builds other vars.
def nonce_spawn(run: RunState, ctx: Any) -> StepPlan:
    child_vars = {"nonce": uuid.uuid4().hex, "at": time.time(), "fx": run.vars.get("fx")}
    payload = {"workflow_id": run.vars.get("child", "rd-quick"), "vars": child_vars, "async": True, "wait": True}
    return StepPlan(node_id="spawn", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child"),
                    next_node="joined")


def joined(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "joined")
    return StepPlan(node_id="joined", complete_output={"child": run.vars.get("child")})


# rd-sync-parent: a synchronous child (START_SUBWORKFLOW without async): AbstractRuntime
# ticks it inside the parent's tick.
def sync_spawn(run: RunState, ctx: Any) -> StepPlan:
    child_vars = {"fx": run.vars.get("fx"), **(run.vars.get("child_vars") or {})}
    payload = {"workflow_id": run.vars.get("child", "rd-quick"), "vars": child_vars}
    return StepPlan(node_id="spawn", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child"),
                    next_node="joined")


# rd-fire-and-forget: an async child without wait; the parent goes on and completes.
def forget_spawn(run: RunState, ctx: Any) -> StepPlan:
    payload = {"workflow_id": run.vars.get("child", "rd-quick"), "vars": {"fx": run.vars.get("fx")},
               "async": True}
    return StepPlan(node_id="spawn", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child"),
                    next_node="after")


def after(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "after")
    return StepPlan(node_id="after", complete_output={"child": run.vars.get("child")})


# rd-block-then-spawn: a node that, once running, blocks until the test sets the Redis key
# "<fx>:go" (at most vars.block_s seconds), then spawns an async child without wait.
def block_then_spawn(run: RunState, ctx: Any) -> StepPlan:
    key = run.vars.get("fx")
    bump(run, "blocked")
    deadline = time.monotonic() + float(run.vars.get("block_s", 60.0))
    while key and not _fx().exists(f"{key}:go") and time.monotonic() < deadline:
        time.sleep(0.05)
    bump(run, "unblocked")
    child_vars = {"fx": key, "delay": float(run.vars.get("child_delay", 2.0))}
    payload = {"workflow_id": run.vars.get("child", "rd-nap"), "vars": child_vars, "async": True}
    return StepPlan(node_id="block", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child"),
                    next_node="after")


# rd-nap: a child that waits vars.delay seconds on a timer, then counts and completes.
def nap(run: RunState, ctx: Any) -> StepPlan:
    from tests.workflows import _iso_in

    until = run.vars.get("until") or _iso_in(float(run.vars.get("delay", 2.0)))
    run.vars["until"] = until
    bump(run, "napping")
    return StepPlan(node_id="nap", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}), next_node="woke")


def woke(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "woke")
    return StepPlan(node_id="woke", complete_output={"woke": True})


# rd-lease-probe: a node that records whether its own run's lease is held while it runs
# (vars.store_url, vars.prefix: where the lease key lives).
def lease_probe(run: RunState, ctx: Any) -> StepPlan:
    import redis

    key = f"{run.vars['prefix']}lease:{run.run_id}"
    held = bool(redis.Redis.from_url(run.vars["store_url"]).exists(key))
    bump(run, "lease_held" if held else "lease_free")
    return StepPlan(node_id="probe", complete_output={"held": held})


WORKFLOWS = [
    WorkflowSpec("rd-quick", "quick", {"quick": quick}),
    WorkflowSpec("rd-pid", "prepare", {"prepare": pid_prepare, "work": pid_node}),
    WorkflowSpec("rd-nonce-parent", "spawn", {"spawn": nonce_spawn, "joined": joined}),
    WorkflowSpec("rd-sync-parent", "spawn", {"spawn": sync_spawn, "joined": joined}),
    WorkflowSpec("rd-fire-and-forget", "spawn", {"spawn": forget_spawn, "after": after}),
    WorkflowSpec("rd-block-then-spawn", "block", {"block": block_then_spawn, "after": after}),
    WorkflowSpec("rd-nap", "nap", {"nap": nap, "woke": woke}),
    WorkflowSpec("rd-lease-probe", "probe", {"probe": lease_probe}),
]


def build() -> Any:
    reg = build_registry()
    for spec in WORKFLOWS:
        reg.register(spec)
    return reg


registry = build()
