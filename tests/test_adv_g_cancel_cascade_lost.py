"""Adversarial: ``cancel_with_children`` while a node is running, when that node then spawns
a synchronous child that waits (here: a 3 s timer).

``cancel_with_children`` cancels the parent and the children it finds, then sends the
parent a tick. The child the running node spawns afterwards is cancelled only by a tick:
the parent's next one (its cascade), or the child's own tick for the reasons "orphan" or
"child". With ``control_ttl_s`` long enough that the Runtime's own probe does not see the
cancel (30 s here; with the default 0.25 s, a cancel landing less than 0.25 s before the
parent's save), the parent's save is refused by the store and its tick sends nothing.

* With every message delivered, the cancel's tick (held as a pending word while the node
  ran) cascades: the child ends CANCELLED (this holds; not covered elsewhere for a sync
  child that waits).
* If the broker loses that one message, nothing in the store leads a sweep to cancel the
  child: the timer pass wakes it (reason "sweep"/"timer", which ``Ticker._advance`` does
  not check against a parent cancelled with its children) and it runs to completion.

Real ``celery worker`` (prefork) and ``beat`` subprocesses tick and sweep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.dispatch import START_TASK
from abstractruntime_celery.driver import build
from tests._adv_g import adv_cluster, make_app
from devkit.procs import Cluster, wait_for
from tests._regress_d import Recorder
from tests.conftest import FX_URL, fx_count
from tests.workflows_adv_g import registry

TIMEOUT = 60.0
ENDED = (RunStatus.COMPLETED, RunStatus.CANCELLED, RunStatus.FAILED)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with adv_cluster(tmp_path, request, lease_ttl_s=10.0, orphan_grace_s=1.0, control_ttl_s=30.0) as c:
        yield c


def _cancel_during_the_node(cluster: Cluster, *, lose_the_cancels_tick: bool) -> tuple[Any, str, str]:
    """Start the parent on the worker, cancel it with its children while its node blocks, let
    the node spawn its sync child. Returns (driver, parent id, child id)."""
    settings = cluster.settings
    fx = f"{settings.key_prefix}fx"
    cluster.worker("w", concurrency=2)
    cluster.beat()
    app = make_app(settings)
    sr = create_scheduled_runtime(app=app, settings=settings, registry=registry, auto_start=False)
    parent_id = "agparent-" + settings.key_prefix.strip(":")
    app.send_task(START_TASK, args=["ag-block-then-sync-spawn",
                                    {"fx": fx, "child_delay": 3.0, "block_s": TIMEOUT}, parent_id],
                  queue=settings.queue)
    wait_for(lambda: fx_count(fx, parent_id, "blocked") == 1, TIMEOUT, "the spawning node to block", cluster)
    if lose_the_cancels_tick:  # the same call as Scheduler.cancel_with_children; its message is lost
        cancelled = build(settings, registry, Recorder(), distributed=True).control.cancel_tree(parent_id)
    else:
        busy = sr.stats.lease_busy
        cancelled = sr.cancel_with_children(parent_id)
        wait_for(lambda: sr.stats.lease_busy > busy, TIMEOUT, "the cancel's tick to find the lease held", cluster)
    assert [s.run_id for s in cancelled] == [parent_id]
    redis.Redis.from_url(FX_URL).set(f"{fx}:go", 1)  # the node goes on and spawns its sync child
    children = wait_for(lambda: sr.driver.run_store.list_children(parent_run_id=parent_id), TIMEOUT,
                        "the child to be spawned", cluster)
    return sr.driver, parent_id, children[0].run_id


def _assert_child_cancelled(cluster: Cluster, driver: Any, parent_id: str, child_id: str) -> None:
    fx = f"{cluster.settings.key_prefix}fx"
    child = wait_for(lambda: (c := driver.load(child_id)).status in ENDED and c, TIMEOUT, "the child to end", cluster)
    assert driver.load(parent_id).status == RunStatus.CANCELLED
    assert child.status == RunStatus.CANCELLED and fx_count(fx, child_id, "woke") == 0, (
        f"child {child_id} of a parent cancelled with its children ended {child.status.value}, having run "
        f"its next node {fx_count(fx, child_id, 'woke')} time(s)")


@pytest.mark.timeout(180)
def test_a_waiting_sync_child_spawned_by_a_node_running_during_cancel_with_children_ends_cancelled(
        cluster: Cluster) -> None:
    driver, parent_id, child_id = _cancel_during_the_node(cluster, lose_the_cancels_tick=False)
    _assert_child_cancelled(cluster, driver, parent_id, child_id)


@pytest.mark.timeout(180)
def test_that_child_ends_cancelled_even_when_the_broker_lost_the_cancels_tick(cluster: Cluster) -> None:
    driver, parent_id, child_id = _cancel_during_the_node(cluster, lose_the_cancels_tick=True)
    _assert_child_cancelled(cluster, driver, parent_id, child_id)
