"""The benchmarks' workflows.

* ``bench_sleeper``: wait until ``vars.until``, then record when it woke (lateness);
* ``bench_chain1`` / ``bench_chain10``: 1 or 10 pure transitions, then complete (throughput);
* ``bench_waiter``: wait for an event, then record when the next node ran (resume latency);
* ``bench_daywait``: wait one day (worker memory with many long waits).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec
from abstractruntime.scheduler.registry import WorkflowRegistry


def wait(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_UNTIL, {"until": run.vars["until"]}),
                    next_node="woke")


def woke(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="woke", complete_output={"woke_at": time.time()})


sleeper = WorkflowSpec("bench_sleeper", "wait", {"wait": wait, "woke": woke})


def _chain(n: int) -> WorkflowSpec:
    def make(i: int) -> Any:
        if i == n - 1:
            return lambda run, ctx: StepPlan(node_id=f"n{i}", complete_output={"done": True})
        return lambda run, ctx: StepPlan(node_id=f"n{i}", next_node=f"n{i + 1}")

    return WorkflowSpec(f"bench_chain{n}", "n0", {f"n{i}": make(i) for i in range(n)})


chain1 = _chain(1)
chain10 = _chain(10)


def wait_event(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": f"go:{run.run_id}"}),
                    next_node="got")


def got(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="got", complete_output={"got_at": time.time()})


waiter = WorkflowSpec("bench_waiter", "wait", {"wait": wait_event, "got": got})


def wait_day(run: RunState, ctx: Any) -> StepPlan:
    until = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}), next_node="woke")


daywait = WorkflowSpec("bench_daywait", "wait", {"wait": wait_day, "woke": woke})

registry = WorkflowRegistry()
for _spec in (sleeper, chain1, chain10, waiter, daywait):
    registry.register(_spec)
