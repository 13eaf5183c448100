"""Workflows for the regression tests of branch regress-e (tests/test_regress_e_*.py).

Subprocess workers load them with
ABSTRACTRUNTIME_CELERY_REGISTRY=tests.workflows_regress_e:registry; the registry
holds every workflow of tests.workflows too. Side effects are counted in the
same Redis hash as tests.workflows (vars["fx"], see ``bump``).
"""

from __future__ import annotations

import re
import time
from typing import Any

from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec
from abstractruntime.scheduler.registry import WorkflowRegistry

from tests.workflows import WORKFLOWS, bump

#: CPython's ``re`` runs this in C without letting go of the GIL; its time doubles per 'x'.
CATASTROPHIC = r"(x+x+)+y"


# loop: wait on vars.key (default "k"), count the event, wait on the same key again, forever.
def loop_wait(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": run.vars.get("key", "k")},
                                                  result_key="last"), next_node="count")


def loop_count(run: RunState, ctx: Any) -> StepPlan:
    run.vars["n"] = int(run.vars.get("n", 0)) + 1
    return StepPlan(node_id="count", next_node="wait")


# forever: one node that counts itself, sleeps vars.sleep seconds and goes again (never ends).
def forever_node(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "loops")
    time.sleep(float(run.vars.get("sleep", 0.02)))
    return StepPlan(node_id="loop", next_node="loop")


# regex: one long C call holding the GIL (re.match on vars.n x's), then finish.
def regex_node(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "regex_started")
    re.match(CATASTROPHIC, "x" * int(run.vars["n"]))
    bump(run, "regex_done")
    return StepPlan(node_id="regex", next_node="after")


def regex_after(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "after")
    return StepPlan(node_id="after", complete_output={"ok": True})


# deadline: an event wait on "k" with deadline vars.until, a node that fails vars.fail_times times,
# then a second event wait ("k2") with the SAME deadline, then finish saying whether it timed out.
def deadline_first(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="first", effect=Effect(EffectType.WAIT_EVENT,
                                                   {"wait_key": "k", "until": run.vars["until"]},
                                                   result_key="first"), next_node="work")


def deadline_work(run: RunState, ctx: Any) -> StepPlan:
    tries = bump(run, "work")
    time.sleep(float(run.vars.get("work_sleep", 0.0)))
    if tries <= int(run.vars.get("fail_times", 0)):
        raise RuntimeError(f"work fails on purpose (try {tries})")
    return StepPlan(node_id="work", next_node="second")


def deadline_second(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="second", effect=Effect(EffectType.WAIT_EVENT,
                                                    {"wait_key": "k2", "until": run.vars["until"]},
                                                    result_key="second"), next_node="end")


def deadline_end(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "end")
    return StepPlan(node_id="end", complete_output={"second": run.vars.get("second")})


REGRESS_WORKFLOWS = [
    WorkflowSpec("loop", "wait", {"wait": loop_wait, "count": loop_count}),
    WorkflowSpec("forever", "loop", {"loop": forever_node}),
    WorkflowSpec("regex", "regex", {"regex": regex_node, "after": regex_after}),
    WorkflowSpec("deadline", "first", {"first": deadline_first, "work": deadline_work,
                                       "second": deadline_second, "end": deadline_end}),
]


def build_registry() -> WorkflowRegistry:
    reg = WorkflowRegistry()
    for spec in WORKFLOWS + REGRESS_WORKFLOWS:
        if spec.workflow_id not in reg:
            reg.register(spec)
    return reg


registry = build_registry()
