"""Regressions of child runs (START_SUBWORKFLOW) on a fleet.

* A spawn node run again after a crash failed its parent: the child's id is
  deterministic, and AbstractRuntime's creation digest covered the child's vars, so
  vars built with a uuid or the time raised ``RunIdentityConflict``.
* Child ids are predictable: a caller may not choose one for a new run, and a run
  planted under one is not taken by the parent as its child.
* An async child without ``wait`` got no message: nothing ticked it before the orphan
  sweep, ``orphan_grace_s`` later.
* A synchronous child was ticked inside its parent's tick without its own lease, so it
  could run in two workers at once.
"""

from __future__ import annotations

import copy
import uuid

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.context import TickContext
from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.dispatch import START_TASK
from abstractruntime_celery.driver import build
from abstractruntime_celery.errors import PayloadError, RunWaitTimeout
from abstractruntime_celery.runstate import child_run_id
from devkit.procs import wait_for
from tests._regress_d import in_process_worker, make_app, wait_drained
from tests.conftest import STORE_URL, fx_count, make_settings
from tests.workflows_regress_d import registry

TIMEOUT = 30.0


# --- a spawn run again after a crash ----------------------------------------------------------

def test_a_spawn_node_run_again_with_other_vars_finds_its_first_child(prefix: str, fx: str) -> None:
    driver = build(make_settings(prefix), registry)
    parent_id = driver.start_run("rd-nonce-parent", vars={"fx": fx}, dispatch=False)
    before_spawn = copy.deepcopy(driver.load(parent_id))  # what a crash before the parent's save leaves
    driver.tick(parent_id)
    child_id = driver.load(parent_id).waiting.details["sub_run_id"]
    first_nonce = driver.load(child_id).vars["nonce"]

    driver.run_store.save(before_spawn)  # the parent's wait "was never saved"
    outcome = driver.tick(parent_id)  # the spawn node runs again and builds another nonce

    again = driver.load(parent_id)
    assert again.status == RunStatus.WAITING, (outcome, again.status, again.error)
    assert again.waiting.details["sub_run_id"] == child_id
    assert [c.run_id for c in driver.run_store.list_children(parent_run_id=parent_id)] == [child_id]
    assert driver.load(child_id).vars["nonce"] == first_nonce  # the first child, as it was made
    assert driver.tick(child_id).status == "completed"
    assert driver.tick(parent_id).status == "completed"
    assert driver.load(parent_id).output["child"]["sub_run_id"] == child_id
    assert fx_count(fx, child_id, "ran") == 1 and fx_count(fx, parent_id, "joined") == 1


# --- child ids are the driver's -------------------------------------------------------------------

def test_a_caller_cannot_start_a_run_under_an_id_of_the_child_id_space(prefix: str, fx: str) -> None:
    settings = make_settings(prefix)
    driver = build(settings, registry)
    planted = "sub-" + uuid.uuid4().hex
    with pytest.raises(PayloadError, match="child"):
        driver.start_run("rd-quick", vars={"fx": fx}, run_id=planted, dispatch=False)
    with pytest.raises(PayloadError, match="child"):
        driver.start_and_tick("rd-quick", vars={"fx": fx}, run_id=planted)
    assert driver.run_store.load(planted) is None

    # The start task with that run_id creates nothing either (one worker thread: in order).
    app = make_app(settings)
    ok_id = f"ok-{uuid.uuid4().hex}"
    with in_process_worker(app, settings, concurrency=1):
        app.send_task(START_TASK, args=["rd-quick", {"fx": fx}, planted], queue=settings.queue)
        app.send_task(START_TASK, args=["rd-quick", {"fx": fx}, ok_id], queue=settings.queue)
        wait_for(lambda: getattr(driver.run_store.load(ok_id), "status", None) == RunStatus.COMPLETED,
                 TIMEOUT, f"run {ok_id} to complete")
        wait_drained(settings.queue)
    assert driver.run_store.load(planted) is None
    assert fx_count(fx, planted, "ran") == 0
    # Ids that only look alike are a caller's to choose.
    assert driver.start_run("rd-quick", run_id="sub-" + uuid.uuid4().hex[:31], dispatch=False)


def test_a_run_planted_under_a_future_child_id_is_not_taken_as_the_child(prefix: str, fx: str) -> None:
    """(A guard: on d599363 AbstractRuntime's identity check refused these too; the creation
    digest of our children now leaves the vars out, and must still not match a run of
    another workflow or parent.)"""
    driver = build(make_settings(prefix), registry)
    for planted_as in ("another workflow", "another parent"):
        parent_id = driver.start_run("rd-nonce-parent", vars={"fx": fx}, dispatch=False)
        child_id = child_run_id(driver.load(parent_id))
        other_parent = driver.start_run("rd-quick", dispatch=False)
        # Written straight through AbstractRuntime, past our API's check.
        if planted_as == "another workflow":
            driver.runtime.start(workflow=registry.get("rd-nap"), vars={"delay": 60}, run_id=child_id)
        else:
            driver.runtime.start(workflow=registry.get("rd-quick"), vars={"fx": fx}, run_id=child_id,
                                 parent_run_id=other_parent)
        before = driver.load(child_id)
        try:
            driver.tick(parent_id)
        except Exception:
            pass  # a refused spawn may fail the tick; what matters is what the parent took
        parent = driver.load(parent_id)
        took = (parent.waiting.details or {}).get("sub_run_id") if parent.waiting is not None else None
        assert took != child_id, f"the parent waits on the run planted under {child_id} ({planted_as})"
        assert not (isinstance(parent.vars.get("child"), dict)
                    and parent.vars["child"].get("sub_run_id") == child_id), planted_as
        after = driver.load(child_id)
        assert (after.workflow_id, after.parent_run_id, after.status) == \
            (before.workflow_id, before.parent_run_id, before.status), planted_as
        assert driver.run_store.list_children(parent_run_id=parent_id) == [], planted_as


# --- an async child without wait ----------------------------------------------------------------

@pytest.mark.timeout(120)
def test_an_async_child_without_wait_is_ticked_at_once(prefix: str, fx: str) -> None:
    # No sweep runs, and the orphan sweep would wait an hour: only a message moves the child.
    settings = make_settings(prefix, orphan_grace_s=3600.0, sweep_interval_s=3600.0)
    app = make_app(settings)
    sr = create_scheduled_runtime(app=app, settings=settings, registry=registry, auto_start=False)
    with in_process_worker(app, settings):
        parent_id, state = sr.run(registry.get("rd-fire-and-forget"), vars={"fx": fx}, timeout=TIMEOUT)
        assert state.status == RunStatus.COMPLETED, state
        child_id = state.output["child"]["sub_run_id"]
        try:
            child = sr.driver.wait_for(child_id, timeout=TIMEOUT, until=lambda r: r.status != RunStatus.RUNNING)
        except RunWaitTimeout:
            pytest.fail(f"the async child {child_id} got no tick within {TIMEOUT:.0f}s: still "
                        f"{sr.driver.load(child_id).status.value}, left to the orphan sweep")
    assert child.status == RunStatus.COMPLETED and child.parent_run_id == parent_id
    assert fx_count(fx, child_id, "ran") == 1 and fx_count(fx, parent_id, "after") == 1


# --- a synchronous child and its own lease --------------------------------------------------------

def test_a_sync_child_whose_lease_another_worker_holds_is_not_ticked_inside_its_parent(
        prefix: str, fx: str) -> None:
    driver = build(make_settings(prefix, lease_ttl_s=60.0), registry)
    parent_id = driver.start_run("rd-sync-parent", vars={"fx": fx}, dispatch=False)
    before_spawn = copy.deepcopy(driver.load(parent_id))
    child_id = child_run_id(before_spawn)
    held = driver.coord.leases.acquire(child_id)  # "another worker ticks the child"
    assert held is not None

    driver.tick(parent_id)
    assert fx_count(fx, child_id, "ran") == 0, "the child's node ran inline while its lease was held elsewhere"
    assert driver.load(parent_id).status == RunStatus.WAITING
    # The parent's worker died before its save: the spawn runs again, finds the child by its
    # id, and still does not tick it while another worker holds it.
    driver.run_store.save(before_spawn)
    driver.tick(parent_id)
    assert fx_count(fx, child_id, "ran") == 0, "the re-run spawn ticked the child without its lease"
    assert [c.run_id for c in driver.run_store.list_children(parent_run_id=parent_id)] == [child_id]

    driver.coord.leases.release(held, TickContext(held.run_id))  # the other worker is done; the child goes on
    assert driver.tick(child_id).status == "completed"
    assert driver.tick(parent_id).status == "completed"
    assert driver.load(parent_id).output["child"] == {"sub_run_id": child_id, "output": {"ran": True}}
    assert fx_count(fx, child_id, "ran") == 1


def test_a_sync_child_ticked_inside_its_parent_runs_under_its_own_lease(prefix: str, fx: str) -> None:
    driver = build(make_settings(prefix), registry)
    parent_id = driver.start_run("rd-sync-parent", vars={
        "fx": fx, "child": "rd-lease-probe", "child_vars": {"prefix": prefix, "store_url": STORE_URL}},
        dispatch=False)
    child_id = child_run_id(driver.load(parent_id))
    assert driver.tick(parent_id).status == "completed"  # the child ran inline, to its end
    assert driver.load(parent_id).output["child"] == {"sub_run_id": child_id, "output": {"held": True}}
    assert (fx_count(fx, child_id, "lease_held"), fx_count(fx, child_id, "lease_free")) == (1, 0)
    assert not driver.coord.leases.is_held(child_id) and not driver.coord.leases.is_held(parent_id)
