"""A ``WorkflowSpec`` subclass keeps its own ``get_node`` (and its fields) in a tick
(regression, branch regress-e).

Before: the tick handed the Runtime a plain ``WorkflowSpec`` rebuilt from the workflow's
id, entry node and nodes, so an override of ``get_node`` (handlers chosen or wrapped at
run time, a node table built lazily) was silently lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from abstractruntime import RunState, RunStatus, StepPlan, WorkflowSpec

from abstractruntime_celery import create_scheduled_runtime
from tests.conftest import make_app, make_settings


def plain_start(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="start", next_node="end")


def plain_end(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="end", complete_output={"by": "the plain node table"})


@dataclass(frozen=True)
class Labelled(WorkflowSpec):
    """Wraps every handler at lookup: the output says which label looked it up; a node that
    is not in the table ("end") is built on demand."""

    label: str = "unset"

    def get_node(self, node_id: str) -> Any:
        if node_id == "end":
            label = self.label

            def built(run: RunState, ctx: Any) -> StepPlan:
                return StepPlan(node_id="end", complete_output={"by": label, "seen": run.vars.get("seen", [])})

            return built
        handler = super().get_node(node_id)

        def wrapped(run: RunState, ctx: Any) -> StepPlan:
            run.vars["seen"] = list(run.vars.get("seen", [])) + [f"{self.label}:{node_id}"]
            return handler(run, ctx)

        return wrapped


def _spec(workflow_id: str) -> Labelled:
    return Labelled(workflow_id, "start", {"start": plain_start, "end": plain_end}, label="override")


def test_a_workflow_spec_subclass_keeps_its_get_node_embedded() -> None:
    spec = _spec("labelled-embedded")
    sr = create_scheduled_runtime(workflows=[spec])
    try:
        _, state = sr.run(spec)
        assert state.status == RunStatus.COMPLETED
        assert state.output == {"by": "override", "seen": ["override:start"]}
    finally:
        sr.stop()


def test_a_workflow_spec_subclass_keeps_its_get_node_on_the_redis_store(prefix: str) -> None:
    spec = _spec("labelled-redis")
    settings = make_settings(prefix)
    from abstractruntime.scheduler.registry import WorkflowRegistry

    reg = WorkflowRegistry()
    reg.register(spec)
    sr = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=reg, auto_start=False)
    try:
        run_id = sr.driver.start_run(spec, dispatch=False)
        state = sr.tick(run_id)                      # ticked here, under its lease, through the tick path
        assert state.status == RunStatus.COMPLETED
        assert state.output == {"by": "override", "seen": ["override:start"]}
    finally:
        sr.stop()
