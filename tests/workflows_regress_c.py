"""Workflows and gates for the regression tests of pause, control races, refused saves
and unreadable inbox entries (tests/test_regress_*.py).

Subprocess workers load them with ABSTRACTRUNTIME_CELERY_REGISTRY=
tests.workflows_regress_c:registry (or :gated_registry). Gates and side-effect
counters live in Redis (the test side-effect database, ARC_TEST_FX_URL), so a test
can hold a node, or a worker's registry lookup, in another thread or process and
let it go when it has done what it needs in between.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Optional

import redis
from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec
from abstractruntime.scheduler.registry import WorkflowRegistry

FX_URL = os.environ.get("ARC_TEST_FX_URL") or f"{os.environ.get('ARC_TEST_REDIS', 'redis://127.0.0.1:6379')}/14"
#: A gate nobody opens lets go after this long (a failing test must not hang a worker).
GATE_TIMEOUT_S = 120.0


def _fx() -> redis.Redis:
    return redis.Redis.from_url(FX_URL, decode_responses=True)


def bump(run: RunState, name: str) -> int:
    """Count a side effect of ``run`` under vars["fx"] (tests read it back)."""
    key = run.vars.get("fx")
    if not key:
        return 0
    return int(_fx().hincrby(key, f"{run.run_id}:{name}", 1))


def fx_count(fx_key: str, run_id: str, name: str) -> int:
    return int(_fx().hget(fx_key, f"{run_id}:{name}") or 0)


class Gate:
    """Two Redis keys: ``<name>:inside`` counts who reached the gate, ``<name>:open``
    lets them (and everyone after) through; ``<name>:armed`` makes a GatedRegistry stop once."""

    def __init__(self, name: str) -> None:
        self.name = name

    def pass_through(self) -> None:
        r = _fx()
        r.incr(f"{self.name}:inside")
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while not r.exists(f"{self.name}:open") and time.monotonic() < deadline:
            time.sleep(0.01)

    def entered(self) -> int:
        return int(_fx().get(f"{self.name}:inside") or 0)

    def open(self) -> None:
        _fx().set(f"{self.name}:open", "1")

    def arm(self) -> None:
        _fx().set(f"{self.name}:armed", "1")

    def take_armed(self) -> bool:
        return bool(_fx().getdel(f"{self.name}:armed"))

    def clear(self) -> None:
        _fx().delete(f"{self.name}:inside", f"{self.name}:open", f"{self.name}:armed")


def _gate_of(run: RunState) -> Optional[Gate]:
    name = run.vars.get("gate")
    return Gate(str(name)) if name else None


# rc-event: wait on vars.key (default "go"), then finish with the payload.
def event_wait(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": run.vars.get("key", "go")},
                                                  result_key="event"), next_node="done")


def event_done(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "done")
    return StepPlan(node_id="done", complete_output={"event": run.vars.get("event")})


# rc-gated-event: a first node held at vars.gate (the run is RUNNING meanwhile), then as rc-event.
def gated_first(run: RunState, ctx: Any) -> StepPlan:
    gate = _gate_of(run)
    if gate is not None:
        gate.pass_through()
    bump(run, "first")
    return StepPlan(node_id="first", next_node="wait")


# rc-event-gated-done: as rc-event, but the node after the wait is held at vars.gate.
def gated_done(run: RunState, ctx: Any) -> StepPlan:
    gate = _gate_of(run)
    if gate is not None:
        gate.pass_through()
    return event_done(run, ctx)


# rc-parent: an async child (rc-event on key "c") the parent waits for; then it finishes with its result.
def parent_spawn(run: RunState, ctx: Any) -> StepPlan:
    payload = {"workflow_id": "rc-event", "vars": {"key": "c", "fx": run.vars.get("fx")}, "async": True, "wait": True}
    return StepPlan(node_id="spawn", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child"),
                    next_node="joined")


def parent_joined(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "joined")
    return StepPlan(node_id="joined", complete_output={"child": run.vars.get("child")})


WORKFLOWS = [
    WorkflowSpec("rc-event", "wait", {"wait": event_wait, "done": event_done}),
    WorkflowSpec("rc-gated-event", "first", {"first": gated_first, "wait": event_wait, "done": event_done}),
    WorkflowSpec("rc-event-gated-done", "wait", {"wait": event_wait, "done": gated_done}),
    WorkflowSpec("rc-parent", "spawn", {"spawn": parent_spawn, "joined": parent_joined}),
]


def build_registry(cls: type = WorkflowRegistry, *args: Any) -> WorkflowRegistry:
    reg = cls(*args)
    for spec in WORKFLOWS:
        reg.register(spec)
    return reg


registry = build_registry()


class GatedRegistry(WorkflowRegistry):
    """A registry whose next lookup, once the gate is armed, waits at the gate: a tick looks
    its workflow up after it has read the run and its inbox under the lease and before it
    saves anything, so a test can act in exactly that window. ``workers_only``: the main
    thread (the test's own calls, in-process) is never held."""

    def __init__(self, gate_name: str, workers_only: bool = False) -> None:
        super().__init__()
        self.gate = Gate(gate_name)
        self.workers_only = workers_only

    def get(self, workflow_id: str) -> Optional[WorkflowSpec]:
        if not (self.workers_only and threading.current_thread() is threading.main_thread()):
            if self.gate.take_armed():
                self.gate.pass_through()
        return super().get(workflow_id)


def registry_gate_name(prefix: str) -> str:
    return f"{prefix}registry-gate"


def gated_registry() -> WorkflowRegistry:
    """For worker subprocesses: the gate is named after the key prefix they are given."""
    prefix = os.environ.get("ABSTRACTRUNTIME_CELERY_KEY_PREFIX", "arc:")
    return build_registry(GatedRegistry, registry_gate_name(prefix))
