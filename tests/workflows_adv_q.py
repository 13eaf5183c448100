"""Workflows of the adversarial tests in tests/test_adv_q_*.py (every workflow of
tests/workflows_adv_p.py too). Side effects are counted in the fx Redis hash named by
vars["fx"] (tests.workflows.bump)."""

from __future__ import annotations

import functools
from typing import Any

from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec

from tests.workflows import bump
from tests.workflows_adv_i import done
from tests.workflows_adv_p import build as build_adv_p


# aq-loop: "work" loops on itself (next_node == "work") until vars.n successful iterations;
# a try fails when vars.pattern[(try - 1) % len(pattern)] is "F" (tries counted "tries",
# successes "ok"). Optionally ("ckpt") it checkpoints its own run before deciding.
def loop_work(run: RunState, ctx: Any) -> StepPlan:
    tries = bump(run, "tries")
    pattern = str(run.vars.get("pattern", "FS"))
    if run.vars.get("ckpt"):
        run.vars["seen"] = tries
        run._runtime_run_store.save(run)  # type: ignore[attr-defined]
    if pattern[(tries - 1) % len(pattern)] == "F":
        raise RuntimeError(f"loop try {tries} is down")
    ok = bump(run, "ok")
    if ok >= int(run.vars.get("n", 6)):
        return StepPlan(node_id="work", complete_output={"ok": ok})
    return StepPlan(node_id="work", next_node="work")


# Handler shapes: a bound method, a callable object, a functools.partial; each checkpoints
# its run then raises while vars.fail_times tries have not been made (always, by default).
def _ckpt_then_maybe_fail(run: RunState, label: str) -> StepPlan:
    tries = bump(run, "tries")
    run.vars["progress"] = tries
    run._runtime_run_store.save(run)  # type: ignore[attr-defined]
    if tries <= int(run.vars.get("fail_times", 1_000_000)):
        raise RuntimeError(f"{label} try {tries} timed out")
    return StepPlan(node_id="work", next_node="done")


class Holder:
    def __init__(self, label: str) -> None:
        self.label = label

    def node(self, run: RunState, ctx: Any) -> StepPlan:
        return _ckpt_then_maybe_fail(run, self.label)

    def __call__(self, run: RunState, ctx: Any) -> StepPlan:
        return _ckpt_then_maybe_fail(run, self.label)


def _partial_node(label: str, run: RunState, ctx: Any) -> StepPlan:
    return _ckpt_then_maybe_fail(run, label)


class AliasSpec(WorkflowSpec):
    """get_node resolves "alias:<x>" by calling self.get_node(x): in a tick that re-enters
    the tick's wrapper (``_SavedFirst.get_node``), so the handler is wrapped twice."""

    def get_node(self, node_id: str) -> Any:  # type: ignore[override]
        if node_id.startswith("alias:"):
            return self.get_node(node_id.split(":", 1)[1])
        return super().get_node(node_id)


def to_alias(run: RunState, ctx: Any) -> StepPlan:
    bump(run, "first")
    return StepPlan(node_id="first", next_node="alias:work")


# aq-wait-deadline-fail: "w" waits on "go" with a deadline long past (the timeout resolves
# in memory at the next tick); "after" counts tries ("after") and raises while
# vars.after_fails tries have not been made.
def wait_past_deadline(run: RunState, ctx: Any) -> StepPlan:
    payload = {"wait_key": "go", "until": "2000-01-01T00:00:00+00:00"}
    return StepPlan(node_id="w", effect=Effect(EffectType.WAIT_EVENT, payload, result_key="ev"), next_node="after")


def after_fails(run: RunState, ctx: Any) -> StepPlan:
    if bump(run, "after") <= int(run.vars.get("after_fails", 1_000_000)):
        raise RuntimeError("after is down")
    return StepPlan(node_id="after", complete_output={"ev": run.vars.get("ev")})


# aq-wait-then-fail: waits on "go" (no deadline), then "after" as above.
def wait_go(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="w", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "go"}, result_key="ev"),
                    next_node="after")


WORKFLOWS = [
    WorkflowSpec("aq-loop", "work", {"work": loop_work}),
    WorkflowSpec("aq-bound", "work", {"work": Holder("bound").node, "done": done}),
    WorkflowSpec("aq-callable", "work", {"work": Holder("callable"), "done": done}),
    WorkflowSpec("aq-partial", "work", {"work": functools.partial(_partial_node, "partial"), "done": done}),
    AliasSpec("aq-alias", "first", {"first": to_alias, "work": Holder("alias"), "done": done}),
    WorkflowSpec("aq-wait-deadline-fail", "w", {"w": wait_past_deadline, "after": after_fails}),
    WorkflowSpec("aq-wait-then-fail", "w", {"w": wait_go, "after": after_fails}),
]


def build() -> Any:
    reg = build_adv_p()
    for spec in WORKFLOWS:
        if reg.get(spec.workflow_id) is None:
            reg.register(spec)
    return reg


registry = build()
