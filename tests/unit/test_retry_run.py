"""``retry_run`` on the stores without compare-and-set (in memory, SQLite: under the run's
lease), embedded, no server: a FAILED run restarts at the node that failed; a run that is not
FAILED, or a child whose parent took its failure, is refused and left as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from abstractruntime import Effect, EffectType, RunState, RunStatus, StepPlan, WorkflowSpec

from abstractruntime_celery import RetryRefusedError, Settings, UnknownRunError, create_scheduled_runtime

GATE = {"open": False}


def first(run: RunState, ctx: Any) -> StepPlan:
    run.vars["passed_first"] = int(run.vars.get("passed_first", 0)) + 1
    return StepPlan(node_id="first", next_node="gate")


def gate(run: RunState, ctx: Any) -> StepPlan:
    if not GATE["open"]:
        raise RuntimeError("gate closed")
    return StepPlan(node_id="gate", complete_output={"passed_first": run.vars.get("passed_first")})


def spawn(run: RunState, ctx: Any) -> StepPlan:
    payload = {"workflow_id": "gate", "vars": {}, "async": True, "wait": True}
    return StepPlan(node_id="spawn", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="child"),
                    next_node="joined")


def joined(run: RunState, ctx: Any) -> StepPlan:
    return StepPlan(node_id="joined", complete_output={"child": run.vars.get("child")})


WORKFLOWS = [WorkflowSpec("gate", "first", {"first": first, "gate": gate}),
             WorkflowSpec("parent", "spawn", {"spawn": spawn, "joined": joined})]


@pytest.fixture(params=["memory", "sqlite"])
def sr(request: Any, tmp_path: Path) -> Iterator[Any]:
    GATE["open"] = False
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/runs.db"
    runtime = create_scheduled_runtime(workflows=WORKFLOWS, settings=Settings(store_url=url, tick_max_attempts=1,
                                                                              retry_backoff_s=0.01))
    yield runtime
    runtime.stop()


def until(sr: Any, run_id: str, status: RunStatus) -> RunState:
    return sr.wait_for(run_id, timeout=10, until=lambda r: r.status == status)


def test_a_failed_run_restarts_at_its_failed_node(sr: Any) -> None:
    run_id = sr.start(workflow=WORKFLOWS[0])
    failed = until(sr, run_id, RunStatus.FAILED)
    assert failed.current_node == "gate"
    with pytest.raises(UnknownRunError):
        sr.retry_run("no-such-run")

    GATE["open"] = True
    sr.retry_run(run_id)
    done = until(sr, run_id, RunStatus.COMPLETED)
    assert done.output == {"passed_first": 1} and done.error is None
    assert done.vars["_runtime"]["retried"]["count"] == 1
    with pytest.raises(RetryRefusedError, match="not FAILED"):
        sr.retry_run(run_id)


def test_a_child_whose_parent_took_its_failure_is_refused(sr: Any) -> None:
    parent = sr.start(workflow=WORKFLOWS[1])
    done = until(sr, parent, RunStatus.COMPLETED)
    child = done.vars["child"]["sub_run_id"]
    before = sr.get_state(child)
    assert before.status == RunStatus.FAILED
    with pytest.raises(RetryRefusedError, match="already taken its failure"):
        sr.retry_run(child)
    after = sr.get_state(child)
    assert (after.status, after.updated_at) == (RunStatus.FAILED, before.updated_at)
