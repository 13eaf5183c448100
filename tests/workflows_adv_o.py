"""Workflows of the adversarial tests in tests/test_adv_o_*.py (every workflow of
tests/workflows_adv_m.py, and those of tests/workflows_adv_i.py and _adv_j.py, too). Side effects are counted in the fx Redis hash named by
vars["fx"] (tests.workflows.bump). ``HOOKS``: callables a test installs (by run id) for
nodes that act on their own run from outside its tick (a control call, as another client
would make it at that moment)."""

from __future__ import annotations

from typing import Any, Callable

from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec

from tests.workflows import bump
from tests.workflows_adv_i import done, fail_node, wait_later
from tests.workflows_adv_m import build as build_adv_m

#: run id -> callable(run id), called once by the "pauser" node on its first execution.
HOOKS: dict[str, Callable[[str], None]] = {}


# ao-fail-pause-flaky: "fail" raises vars.fail_times times (counted "tries"); then "flaky"
# (counted "flaky") calls HOOKS[run_id] on its first execution (a pause landing mid-tick) and
# goes on; its next vars.flaky_fails executions raise; then wait "later", done.
def fail_to_flaky(run: RunState, ctx: Any) -> StepPlan:
    plan = fail_node(run, ctx)
    return StepPlan(node_id=plan.node_id, next_node="flaky")


def flaky(run: RunState, ctx: Any) -> StepPlan:
    n = bump(run, "flaky")
    if n == 1 and run.run_id in HOOKS:
        HOOKS[run.run_id](run.run_id)
    elif 2 <= n <= 1 + int(run.vars.get("flaky_fails", 1)):
        raise RuntimeError("flaky is down")
    return StepPlan(node_id="flaky", next_node="wait")


# ao-loop: waits on event "msg" vars.n times (each applied payload counted "got" and kept in
# vars.got; HOOKS[run_id] called at the first), then completes with the list.
def loop_wait(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "msg"}, result_key="last"),
                    next_node="took")


def loop_took(run: RunState, ctx: Any) -> StepPlan:
    if bump(run, "got") == 1 and run.run_id in HOOKS:
        HOOKS[run.run_id](run.run_id)
    got = list(run.vars.get("got") or []) + [run.vars.get("last")]
    run.vars["got"] = got
    if len(got) >= int(run.vars.get("n", 2)):
        return StepPlan(node_id="took", complete_output={"got": got})
    return StepPlan(node_id="took", next_node="wait")


# ao-fail-then-deadline: "fail" raises vars.fail_times times, then waits on "later" with a
# deadline vars.deadline_s ahead (its timer), then completes.
def wait_later_deadline(run: RunState, ctx: Any) -> StepPlan:
    from tests.workflows import _iso_in

    payload = {"wait_key": "later", "until": _iso_in(float(run.vars.get("deadline_s", 0.3)))}
    return StepPlan(node_id="waitd", effect=Effect(EffectType.WAIT_EVENT, payload, result_key="ev"),
                    next_node="done")


def fail_to_deadline(run: RunState, ctx: Any) -> StepPlan:
    plan = fail_node(run, ctx)
    return StepPlan(node_id=plan.node_id, next_node="waitd")


WORKFLOWS = [
    WorkflowSpec("ao-fail-pause-flaky", "fail", {"fail": fail_to_flaky, "flaky": flaky, "wait": wait_later,
                                                 "done": done}),
    WorkflowSpec("ao-loop", "wait", {"wait": loop_wait, "took": loop_took}),
    WorkflowSpec("ao-fail-then-deadline", "fail", {"fail": fail_to_deadline, "waitd": wait_later_deadline,
                                                   "done": done}),
]


def build() -> Any:
    from tests.workflows_adv_i import WORKFLOWS as ADV_I
    from tests.workflows_adv_j import WORKFLOWS as ADV_J

    reg = build_adv_m()
    for spec in [*ADV_I, *ADV_J, *WORKFLOWS]:
        if reg.get(spec.workflow_id) is not None:
            continue
        reg.register(spec)
    return reg


registry = build()
