"""Workflows of the adversarial tests in tests/test_adv_h_*.py.

Subprocess workers load them with ABSTRACTRUNTIME_CELERY_REGISTRY=tests.workflows_adv_h:registry
(every workflow here, of tests/workflows_adv_g.py, tests/workflows.py and
tests/workflows_regress_d.py). Side effects are counted in the fx Redis hash named by
vars["fx"] (tests.workflows.bump).
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec

from tests.workflows import bump
from tests.workflows_adv_g import LOOP, build as build_adv_g

STORE_URL = os.environ.get("ARC_TEST_STORE_URL") or f"{os.environ.get('ARC_TEST_REDIS', 'redis://127.0.0.1:6379')}/10"


def _drop_own_lease(run: RunState) -> None:
    """What a lease that expired under a node looks like (a frozen process, a GIL hog):
    the lease key is gone when the node's save goes out."""
    prefix = run.vars.get("prefix")
    if prefix:
        redis.Redis.from_url(STORE_URL).delete(f"{prefix}lease:{run.run_id}")


# ah-lose-last: one node whose lease is lost while it runs, and which completes the run: its
# save goes out with the lease release (no node comes after it to flush it earlier).
def lose_last(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "ran")
    _drop_own_lease(run)
    return StepPlan(node_id="lose", complete_output={"ok": True})


# ah-lose-then: the same node, with a node after it (the save is flushed before that node).
def lose_then(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "ran")
    _drop_own_lease(run)
    return StepPlan(node_id="lose", next_node="after")


def after(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "after")
    return StepPlan(node_id="after", complete_output={"ok": True})


# ah-loop: waits on "k" again and again, keeping every payload in vars.got; completes after
# vars.n of them.
def loop_wait(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "k"}, result_key="ev"),
                    next_node="got")


def loop_got(run: RunState, ctx: Any) -> StepPlan:
    got = list(run.vars.get("got") or [])
    got.append(run.vars.get("ev"))
    run.vars["got"] = got
    if len(got) >= int(run.vars.get("n", 3)):
        return StepPlan(node_id="got", complete_output={"got": got})
    return StepPlan(node_id="got", next_node="wait")


# ah-nap: sleeps vars.sleep seconds in one node, then completes.
def nap(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "nap")
    time.sleep(float(run.vars.get("sleep", 1.0)))
    return StepPlan(node_id="nap", complete_output={"ok": True})


WORKFLOWS = [
    WorkflowSpec("ah-lose-last", "lose", {"lose": lose_last}),
    WorkflowSpec("ah-lose-then", "lose", {"lose": lose_then, "after": after}),
    WorkflowSpec("ah-loop", "wait", {"wait": loop_wait, "got": loop_got}),
    WorkflowSpec("ah-nap", "nap", {"nap": nap}),
]


def build() -> Any:
    reg = build_adv_g()
    for spec in WORKFLOWS + [LOOP]:
        reg.register(spec)
    return reg


registry = build()


# ah-fail-asked: a node that fails (counting its tries under "tries"), while a tick of the
# run is asked for (what a message delivered meanwhile leaves: {p}pending:<id>).
def fail_asked(run: RunState, ctx: Any) -> StepPlan:
    tries = bump(run, "tries")
    prefix = run.vars.get("prefix")
    if prefix:
        redis.Redis.from_url(STORE_URL).set(f"{prefix}pending:{run.run_id}", "1", px=60_000)
    raise RuntimeError(f"downstream is down (try {tries})")


registry.register(WorkflowSpec("ah-fail-asked", "fail", {"fail": fail_asked}))
