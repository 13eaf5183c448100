"""A synchronous child is ticked inside its parent's tick, under its own lease: its saves are
fenced by that lease, but not by the control state (``save_run.lua``'s control check is only
given for the tick's own run). A cancel of the child that lands while the child's last save
is on its way is overwritten by that save: the child ends COMPLETED and its parent goes on
with its output, though ``cancel_run`` / ``cancel_with_children`` returned it CANCELLED.

The window is opened from outside the package: the worker's Redis connection goes through
a TCP proxy that holds the child's completing save on the wire (a slow network) while the
operator cancels it; the AbstractRuntime tick has already looked at the child's control
state just before that save, as it always does.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterator

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from abstractruntime_celery.runstate import child_run_id
from tests import workflows_adv_f as wf
from tests._adv_f import HoldProxy, Side
from tests.conftest import REDIS, make_settings

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def proxy() -> Iterator[HoldProxy]:
    host, port = REDIS.split("//", 1)[1].split(":")
    p = HoldProxy((host, int(port)))
    yield p
    p.close()


def _held_child_completion(prefix: str, fx: str, proxy: HoldProxy, operator: Any) -> tuple[Any, str, str]:
    """Tick an af-sync-parent on a worker behind the proxy; hold its child's completing save
    on the wire, run ``operator(ctl, parent_id, child_id)``, let the save go, let the tick end."""
    settings = make_settings(prefix, lease_ttl_s=20.0)
    worker = build(replace(settings, store_url=proxy.url(int(settings.store_url.rsplit("/", 1)[1]))),
                   wf.build_registry())
    ctl = build(settings, wf.build_registry())
    parent_id = ctl.start_run("af-sync-parent", vars={"fx": fx}, dispatch=False)
    child_id = child_run_id(ctl.load(parent_id))

    proxy.hold([b"EVALSHA", child_id.encode(), b'"status": "completed"'])
    tick = Side(lambda: worker.tick(parent_id))
    assert proxy.held.wait(30), "the child's completing save never reached the proxy"
    try:
        operator(ctl, parent_id, child_id)
    finally:
        proxy.let_go()
    try:
        tick.result()
    except Exception:
        pass  # a refused parent save ends the tick quietly; anything else shows in the states below
    return ctl, parent_id, child_id


def test_cancel_run_of_a_synchronous_child_that_lands_while_its_parent_ticks_it_stands(
        prefix: str, fx: str, proxy: HoldProxy) -> None:
    seen: dict[str, Any] = {}

    def cancel_child(ctl: Any, parent_id: str, child_id: str) -> None:
        seen["returned"] = ctl.control.cancel(child_id, "operator")  # what Scheduler.cancel_run calls

    ctl, parent_id, child_id = _held_child_completion(prefix, fx, proxy, cancel_child)
    assert seen["returned"].status == RunStatus.CANCELLED
    child = ctl.load(child_id)
    assert child.status == RunStatus.CANCELLED, (child.status, child.output)
    parent = ctl.load(parent_id)
    assert parent.output is None or parent.output.get("child", {}).get("output") != {"child_ran": True}


def test_cancel_with_children_landing_while_a_parent_ticks_its_synchronous_child_leaves_the_child_cancelled(
        prefix: str, fx: str, proxy: HoldProxy) -> None:
    seen: dict[str, Any] = {}

    def cancel_tree(ctl: Any, parent_id: str, child_id: str) -> None:
        seen["cancelled"] = {r.run_id for r in ctl.control.cancel_tree(parent_id, "operator")}

    ctl, parent_id, child_id = _held_child_completion(prefix, fx, proxy, cancel_tree)
    assert seen["cancelled"] == {parent_id, child_id}
    assert ctl.load(parent_id).status == RunStatus.CANCELLED
    child = ctl.load(child_id)
    assert child.status == RunStatus.CANCELLED, (child.status, child.output)
