"""The benchmark's workflow: wait until ``vars.until``, then record when it woke."""

from __future__ import annotations

import time
from typing import Any

from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec
from abstractruntime.scheduler.registry import WorkflowRegistry


def wait(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_UNTIL, {"until": run.vars["until"]}),
                    next_node="woke")


def woke(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="woke", complete_output={"woke_at": time.time()})


sleeper = WorkflowSpec("bench_sleeper", "wait", {"wait": wait, "woke": woke})
registry = WorkflowRegistry()
registry.register(sleeper)
