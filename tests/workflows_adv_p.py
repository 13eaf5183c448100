"""Workflows of the adversarial tests in tests/test_adv_p_*.py (every workflow of
tests/workflows_adv_o.py too). Side effects are counted in the fx Redis hash named by
vars["fx"] (tests.workflows.bump). ``HOOKS``: callables a test installs (by run id), called
by "work" on every execution before it saves (as another client would act at that moment)."""

from __future__ import annotations

from typing import Any, Callable

from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec

from tests.workflows import bump
from tests.workflows_adv_i import done
from tests.workflows_adv_o import build as build_adv_o

#: run id -> callable(run id), called by "work" on each execution.
HOOKS: dict[str, Callable[[str], None]] = {}


# ap-save-then-fail: "work" counts a try ("tries"), keeps it in vars.progress, saves its run
# through the store the Runtime hands nodes (run._runtime_run_store: a node checkpointing its
# progress), then raises while vars.fail_times tries have not been made (always, by default);
# afterwards it goes on to "done".
def save_then_fail(run: RunState, ctx: Any) -> StepPlan:
    tries = bump(run, "tries")
    if run.run_id in HOOKS:
        HOOKS[run.run_id](run.run_id)
    run.vars["progress"] = tries
    run._runtime_run_store.save(run)  # type: ignore[attr-defined]
    if tries <= int(run.vars.get("fail_times", 1_000_000)):
        raise RuntimeError(f"downstream timed out (try {tries})")
    return StepPlan(node_id="work", next_node="done")


# ap-parent: starts an async child (vars.child_wf, with vars.child_vars) and waits on it,
# then "after" counts a try ("after") and raises while vars.after_fails tries have not been
# made (none, by default); then completes with the child's result.
def spawn_wait(run: RunState, ctx: Any) -> StepPlan:
    payload = {"workflow_id": run.vars.get("child_wf", "ai-fail-then-wait"),
               "vars": dict(run.vars.get("child_vars") or {}), "async": True, "wait": True}
    return StepPlan(node_id="spawn", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child"),
                    next_node="after")


def after(run: RunState, ctx: Any) -> StepPlan:
    if bump(run, "after") <= int(run.vars.get("after_fails", 0)):
        raise RuntimeError("after is down")
    return StepPlan(node_id="after", complete_output={"child": run.vars.get("child")})


WORKFLOWS = [
    WorkflowSpec("ap-save-then-fail", "work", {"work": save_then_fail, "done": done}),
    WorkflowSpec("ap-parent", "spawn", {"spawn": spawn_wait, "after": after}),
]


def build() -> Any:
    reg = build_adv_o()
    for spec in WORKFLOWS:
        if reg.get(spec.workflow_id) is None:
            reg.register(spec)
    return reg


registry = build()
