"""Adversarial: ``cancel_with_children`` / ``Control.cancel_tree`` ("Cancel a run and every
active descendant") walks the tree only through *active* runs: ``_active_descendants`` and
``_active_children`` list the children of RUNNING and WAITING runs only. An active
grandchild under a child that has ended (an async child that spawned its own child without
waiting for it, then completed; or a child cancelled earlier on its own, without its
children) is never listed and never cancelled, and no cascade reaches it either (its parent
is not a run cancelled with its children). It runs on after the call returned, though the
caller asked to cancel the whole tree. (The seed's walk had the same hole; round K's
whole-tree listing kept it.)

At fault: control.py ``Control._active_descendants`` / ``Control.cancel_tree`` (the walk
does not descend through ended runs).

The held tests: a deep chain (depth 30) and a wide tree (60 children), a child that
completed on its own before the call or after the listing (not returned), a root that does
not exist, and descendants cancelled before the call (not returned).

Deterministic, in-process: every tick sent without an ETA runs to its end before ``send``
returns (as tests/test_adv_k_cancel_tree_grandchild.py).
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, Optional

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from abstractruntime_celery.errors import UnknownRunError
from tests.conftest import make_settings
from tests.workflows_adv_l import registry

pytestmark = pytest.mark.timeout(60)


class EagerDispatcher:
    min_eta_s = 0.0

    def __init__(self) -> None:
        self.driver: Any = None

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None,
             message_id: Optional[str] = None) -> None:
        if eta is None:
            thread = threading.Thread(target=lambda: self.driver.tick(run_id, reason=reason))
            thread.start()
            thread.join()


class Recorder:
    min_eta_s = 0.0

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None,
             message_id: Optional[str] = None) -> None:
        pass


def _descendants(driver: Any, run_id: str) -> list[Any]:
    out, todo = [], [run_id]
    while todo:
        for child in driver.run_store.list_children(parent_run_id=todo.pop()):
            out.append(child)
            todo.append(child.run_id)
    return out


def test_an_active_grandchild_under_a_completed_child_is_cancelled(prefix: str, fx: str) -> None:
    eager = EagerDispatcher()
    driver = eager.driver = build(make_settings(prefix), registry, eager)
    root_id = driver.start_run("al-forget-then-wait", vars={"fx": fx})
    assert driver.load(root_id).status == RunStatus.WAITING
    tree = {r.run_id: r.status for r in _descendants(driver, root_id)}
    assert sorted(s.value for s in tree.values()) == ["completed", "waiting"], tree

    cancelled = driver.control.cancel_tree(root_id)
    left = [r.run_id for r in _descendants(driver, root_id) if r.status in (RunStatus.RUNNING, RunStatus.WAITING)]
    assert driver.load(root_id).status == RunStatus.CANCELLED
    assert not left, (f"cancel_tree({root_id}) returned {len(cancelled)} run(s); the root's grandchild {left} "
                      "(under a completed child) is still active")


def test_held_a_deep_chain_and_a_wide_tree_are_cancelled_and_returned(prefix: str, fx: str) -> None:
    driver = build(make_settings(prefix), registry, Recorder())  # (no ticks: a tree built by hand)
    store = driver.run_store
    root_id = driver.start_run("event", vars={"fx": fx}, dispatch=False)
    driver.tick(root_id, reason="start")

    def child_of(parent: str) -> str:
        run_id = driver.start_run("event", vars={"fx": fx}, dispatch=False)
        driver.tick(run_id, reason="start")
        run = store.load(run_id)
        run.parent_run_id = parent
        store.save(run)
        return run_id

    chain = [root_id]
    for _ in range(30):
        chain.append(child_of(chain[-1]))
    wide = [child_of(root_id) for _ in range(60)]
    done = child_of(root_id)
    done_run = store.load(done)
    done_run.status = RunStatus.COMPLETED
    store.save(done_run)
    gone = child_of(root_id)
    driver.control.cancel(gone)  # cancelled before the call: not returned
    returned = [s.run_id for s in driver.control.cancel_tree(root_id)]
    assert sorted(returned) == sorted(chain + wide) and len(returned) == len(set(returned))
    assert all(store.load(r).status == RunStatus.CANCELLED for r in chain + wide)
    assert store.load(done).status == RunStatus.COMPLETED


def test_held_a_root_that_does_not_exist(prefix: str) -> None:
    driver = build(make_settings(prefix), registry, Recorder())
    with pytest.raises(UnknownRunError):
        driver.control.cancel_tree("0" * 32)


def test_held_a_child_that_ends_on_its_own_after_the_listing_is_not_returned(prefix: str, fx: str) -> None:
    driver = build(make_settings(prefix), registry, Recorder())
    store, control = driver.run_store, driver.control
    root_id = driver.start_run("event", vars={"fx": fx}, dispatch=False)
    driver.tick(root_id, reason="start")
    kids = []
    for _ in range(2):
        run_id = driver.start_run("event", vars={"fx": fx}, dispatch=False)
        driver.tick(run_id, reason="start")
        run = store.load(run_id)
        run.parent_run_id = root_id
        store.save(run)
        kids.append(run_id)
    listed = control._active_descendants

    def then_one_ends(run_id: str) -> list[str]:
        found = listed(run_id)
        run = store.load(kids[0])
        run.status, run.waiting = RunStatus.COMPLETED, None
        store.save(run)
        return found

    control._active_descendants = then_one_ends
    returned = {s.run_id for s in control.cancel_tree(root_id)}
    assert returned == {root_id, kids[1]} and store.load(kids[0]).status == RunStatus.COMPLETED
