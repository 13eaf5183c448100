"""Adversarial: ``cancel_with_children`` still misses a *grandchild* the cascade cancelled
first. Round J listed a run's children before its own cancel, so a child the cancel's tick
cancels (the cascade) is still returned. But the cascade runs down the whole tree: the
root's tick cancels the child *with its children* (``on_cancelled`` -> ``cancel_tree``), and
the child's tick cancels the grandchild. When ``cancel_tree`` then gets to the child, its
"before" list is read only now, after the cascade: the grandchild is no longer active and is
not returned, though this call cancelled it. A fast worker (the order CI found for the
child) gives this order one level down: the call returns ``[root, child]`` for a tree of
three cancelled runs.

README / ``Scheduler.cancel_with_children``: "Cancel a run and every active descendant;
returns those cancelled now."

At fault: control.py ``Control.cancel_tree``: ``before = self._active_children(current)`` is
read when ``current`` is popped, not when the cancel that started the cascade was made (the
descendants active before the root's cancel are never listed as a whole).

Deterministic, in-process: every tick sent without an ETA runs to its end before ``send``
returns (``EagerDispatcher`` of tests/test_regress_cancel_cascade.py).
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, Optional

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from tests.conftest import make_settings
from tests.workflows_adv_k import registry

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


def test_a_grandchild_the_cascade_cancelled_first_is_still_returned(prefix: str, fx: str) -> None:
    eager = EagerDispatcher()
    driver = eager.driver = build(make_settings(prefix), registry, eager)
    root_id = driver.start_run("ak-tree", vars={"fx": fx, "levels": 2})
    root = driver.load(root_id)
    child_id = root.waiting.details["sub_run_id"]
    child = driver.load(child_id)
    assert child.status == RunStatus.WAITING
    grandchild_id = child.waiting.details["sub_run_id"]
    assert driver.load(grandchild_id).status == RunStatus.WAITING

    cancelled = driver.control.cancel_tree(root_id)
    assert all(driver.load(r).status == RunStatus.CANCELLED for r in (root_id, child_id, grandchild_id))
    returned = {s.run_id for s in cancelled}
    assert returned == {root_id, child_id, grandchild_id}, (
        f"three active runs were cancelled by this call; it returned {len(returned)} "
        f"(grandchild returned: {grandchild_id in returned})")
