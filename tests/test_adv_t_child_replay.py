"""Adversarial (retention): a child deleted while its parent will still look for it.

A spawn node gives its child an id made from the parent's id, node and effect count
(``runstate.child_run_id``), so a spawn run again finds the child the first attempt made
(and, if it ended, takes its result) instead of starting a second one. The parent's wait
on the child is saved after the child is created; when that save does not land (here a
pause lands mid-tick, and the save is refused; a worker killed at that point is the same),
the parent is left paused at the spawn node, its record naming no child. Retention keeps a
child only while its parent *waited on it*: this child ended and was deleted
``retention_s`` later although its parent was alive; when the parent was resumed (an
operator's pause may last longer than ``retention_s``), the spawn node ran again, found no
child under that id, and started the child again: its side effects twice. Fixed: a child
is deleted only once its parent is gone or has ended (``expire_runs.lua``, ``parent_live``).
"""

from __future__ import annotations

import time
from typing import Any

from abstractruntime import Effect, EffectType, RunStatus, StepPlan, WorkflowRegistry, WorkflowSpec

from abstractruntime_celery.driver import build
from abstractruntime_celery.sweep import sweep
from tests._dispatchers import Recorder
from tests.conftest import make_settings

RAN: dict[str, int] = {}
DRIVER: list[Any] = []
PAUSED: set[str] = set()


def _spawn(run: Any, ctx: Any) -> StepPlan:
    if run.run_id not in PAUSED:
        PAUSED.add(run.run_id)
        DRIVER[0].control.pause(run.run_id)  # an operator's pause lands while this tick runs
    payload = {"workflow_id": "kid", "vars": {}, "async": True, "wait": True}
    return StepPlan(node_id="spawn", effect=Effect(EffectType.START_SUBWORKFLOW, payload, result_key="kid"),
                    next_node="joined")


def _joined(run: Any, ctx: Any) -> StepPlan:
    return StepPlan(node_id="joined", complete_output={"kid": run.vars.get("kid")})


def _kid(run: Any, ctx: Any) -> StepPlan:
    RAN[run.run_id] = RAN.get(run.run_id, 0) + 1  # the child's side effect
    return StepPlan(node_id="kid", complete_output={"ran": True})


def _registry() -> WorkflowRegistry:
    reg = WorkflowRegistry()
    reg.register(WorkflowSpec("spawner", "spawn", {"spawn": _spawn, "joined": _joined}))
    reg.register(WorkflowSpec("kid", "kid", {"kid": _kid}))
    return reg


def test_a_child_its_live_parent_will_spawn_again_is_not_deleted_and_run_twice(prefix: str) -> None:
    RAN.clear()
    PAUSED.clear()
    DRIVER[:] = [build(make_settings(prefix, retention_s=0.001), _registry(), Recorder())]
    driver = DRIVER[0]
    parent = driver.start_run("spawner", dispatch=False)
    driver.tick(parent)  # creates the child; the parent's wait on it is refused (paused meanwhile)
    run = driver.load(parent)
    assert run.status == RunStatus.WAITING and run.current_node == "spawn", (run.status, run.current_node)
    [child] = [c.run_id for c in driver.run_store.list_children(parent_run_id=parent)]
    driver.tick(child)  # the orphan sweep (or its start message) runs it
    assert driver.load(child).status == RunStatus.COMPLETED and RAN == {child: 1}
    time.sleep(0.01)
    for _ in range(3):
        sweep(driver, force=True)
    gone = driver.run_store.load(child) is None
    driver.control.resume(parent)
    driver.tick(parent, reason="resumed")  # the spawn node again: it takes the child's result, or starts it
    if driver.run_store.load(child) is not None and driver.load(child).status == RunStatus.RUNNING:
        driver.tick(child)
        driver.tick(parent, reason="child")
    assert driver.load(parent).status == RunStatus.COMPLETED
    assert RAN == {child: 1}, f"the child ran {RAN.get(child)} times (deleted while its parent lived: {gone})"
    for _ in range(3):  # the parent ended: the child goes, then the parent
        sweep(driver, force=True)
    assert driver.run_store.load(child) is None and driver.run_store.load(parent) is None
