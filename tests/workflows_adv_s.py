"""Workflows of the adversarial tests in tests/test_adv_s_*.py (every workflow of
tests/workflows.py too)."""

from __future__ import annotations

from typing import Any, Callable

import redis
from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec

from tests.workflows import WORKFLOWS, bump
from abstractruntime_celery.registry import WorkflowRegistry


# as-own-redis: "write" counts a try ("tries") and writes to the node's own Redis
# (vars.url: not the store's); that Redis refusing the write fails the node, then it completes.
def own_redis_write(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "tries")
    redis.Redis.from_url(str(run.vars["url"]), socket_connect_timeout=1.0).set("node-own-key", "1")
    return StepPlan(node_id="write", complete_output={"written": True})


#: run id -> callable(step number), called by "as-steps" on every execution of a step, after its
#: side effect is counted and before its commit (as another process would act at that moment).
HOOKS: dict[str, Callable[[int], None]] = {}


# as-steps: vars.n steps, each counting a side effect ("step"); completes with {"i": n}.
def counted_step(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "step")
    if run.run_id in HOOKS:
        HOOKS[run.run_id](int(run.vars.get("i", 0)) + 1)
    run.vars["i"] = int(run.vars.get("i", 0)) + 1
    if run.vars["i"] >= int(run.vars.get("n", 3)):
        return StepPlan(node_id="step", complete_output={"i": run.vars["i"]})
    return StepPlan(node_id="step", next_node="step")


# as-parent: starts an "as-steps" child (vars.child_n steps; vars.async: async or ticked inline),
# waits for it, then counts "joined" and completes with the child's output.
def spawn_steps(run: RunState, ctx: Any) -> StepPlan:
    payload = {"workflow_id": "as-steps", "vars": {"n": run.vars.get("child_n", 2), "fx": run.vars.get("fx")},
               "async": bool(run.vars.get("async", True)), "wait": True}
    return StepPlan(node_id="spawn", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child"),
                    next_node="joined")


def joined(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "joined")
    return StepPlan(node_id="joined", complete_output={"child": run.vars.get("child")})


# as-foreign-store: "read" counts a try ("tries") and reads a run from another deployment's
# store (vars.url, a Redis nobody answers at): our client raises StoreUnavailableError.
def foreign_read(run: RunState, ctx: Any) -> StepPlan:
    from abstractruntime_celery.stores.redis.runs import RedisRunStore

    bump(run, "tries")
    RedisRunStore.from_url(str(run.vars["url"]), prefix="other:").load("someone")
    return StepPlan(node_id="read", complete_output={"read": True})


def build_registry() -> WorkflowRegistry:
    reg = WorkflowRegistry()
    for spec in WORKFLOWS:
        reg.register(spec)
    reg.register(WorkflowSpec("as-steps", "step", {"step": counted_step}))
    reg.register(WorkflowSpec("as-parent", "spawn", {"spawn": spawn_steps, "joined": joined}))
    reg.register(WorkflowSpec("as-foreign-store", "read", {"read": foreign_read}))
    reg.register(WorkflowSpec("as-own-redis", "write", {"write": own_redis_write}))
    return reg


registry = build_registry()


class FlakyCatalogue(WorkflowRegistry):
    """A registry that looks its workflows up somewhere else at call time (a catalogue
    service, files deployed next to the worker) and whose first ``fails`` lookups fail."""

    def __init__(self, fails: int = 1) -> None:
        super().__init__()
        self.fails = fails
        for spec in WORKFLOWS:
            self.register(spec)

    def get(self, workflow_id: str) -> Any:
        if self.fails > 0:
            self.fails -= 1
            raise RuntimeError("workflow catalogue unreachable")
        return super().get(workflow_id)
