"""Regression: ``cancel_with_children`` missed a child spawned by a node already running.

The children were listed once, when the call was made; a node that was running then
spawned its child afterwards, the parent ended CANCELLED (its save refused), and the
orphan sweep ran the child to completion. The cascade must happen when the parent
reaches its terminal state: such a child ends CANCELLED.

Real ``celery worker`` (prefork) and ``beat`` subprocesses: the cancel comes from this
process, as from a web app (AbstractRuntime remembers cancelled runs per process, so a
cancel made in the worker's own process would stop the spawn before it starts).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.driver import build
from devkit.procs import Cluster, settings_env, wait_for
from tests._regress_d import in_process_worker, make_app, regress_cluster, wait_drained
from tests.conftest import BROKER_URL, FX_URL, fx_count, make_settings
from tests.workflows_regress_d import registry

TIMEOUT = 60.0
ENDED = (RunStatus.COMPLETED, RunStatus.CANCELLED, RunStatus.FAILED)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with regress_cluster(tmp_path, request, orphan_grace_s=1.0) as c:
        yield c


def cancel_while_the_spawning_node_runs(cluster: Cluster, child: str) -> tuple[str, str, Any]:
    """Start rd-block-then-spawn on the cluster, cancel it with its children while its node
    blocks, then let the node spawn ``child`` (async, no wait). Returns (parent id, child
    id, the child's state once it ended)."""
    cluster.worker("w", concurrency=2)
    cluster.beat()
    settings = cluster.settings
    fx = f"{settings.key_prefix}fx"
    sr = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry, auto_start=False)
    parent_id, _ = sr.run(registry.get("rd-block-then-spawn"), vars={
        "fx": fx, "child": child, "child_delay": 2.0, "block_s": TIMEOUT}, wait=False)
    wait_for(lambda: fx_count(fx, parent_id, "blocked") == 1, TIMEOUT, "the node to block", cluster)
    assert sr.driver.run_store.list_children(parent_run_id=parent_id) == []

    cancelled = sr.cancel_with_children(parent_id)
    assert [s.run_id for s in cancelled] == [parent_id]
    redis.Redis.from_url(FX_URL).set(f"{fx}:go", 1)  # the node goes on and spawns its child
    children = wait_for(lambda: sr.driver.run_store.list_children(parent_run_id=parent_id), TIMEOUT,
                        "the child to be spawned", cluster)
    child_id = children[0].run_id
    ended = sr.driver.wait_for(child_id, timeout=TIMEOUT, until=lambda r: r.status in ENDED)
    assert sr.driver.load(parent_id).status == RunStatus.CANCELLED
    assert [c.run_id for c in sr.driver.run_store.list_children(parent_run_id=parent_id)] == [child_id]
    return parent_id, child_id, ended


@pytest.mark.timeout(180)
def test_a_child_spawned_after_its_parent_was_cancelled_with_its_children_ends_cancelled(
        cluster: Cluster) -> None:
    # The child naps 2 s on a timer before it could complete.
    parent_id, child_id, ended = cancel_while_the_spawning_node_runs(cluster, "rd-nap")
    fx = f"{cluster.settings.key_prefix}fx"
    assert ended.status == RunStatus.CANCELLED, \
        f"child {child_id} of parent {parent_id}, cancelled with its children, ended {ended.status.value}"
    assert fx_count(fx, child_id, "woke") == 0



class InlineDispatcher:
    """Runs each tick sent to a child at once, to its end, before ``send`` returns: a worker
    that takes a message the moment it is published (the fastest a fleet can be). Ticks of
    other runs are only recorded."""

    min_eta_s = 0.0

    def __init__(self) -> None:
        self.driver: Any = None
        self.ticked: list[tuple[str, str, Optional[str]]] = []
        self.recorded: list[tuple[str, str]] = []

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None,
             message_id: Optional[str] = None) -> None:
        if eta is not None or not run_id.startswith("sub-"):
            self.recorded.append((run_id, reason))
            return

        def tick() -> None:
            try:
                self.ticked.append((run_id, reason, self.driver.tick(run_id, reason=reason).status))
            except Exception as exc:  # noqa: BLE001 - recorded, the test reads it
                self.ticked.append((run_id, reason, repr(exc)))

        thread = threading.Thread(target=tick)
        thread.start()
        thread.join()


CANCEL_ELSEWHERE = """
import sys
from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.config import load_settings
from tests.workflows_regress_d import registry
sr = create_scheduled_runtime(settings=load_settings(), registry=registry, auto_start=False)
print([s.run_id for s in sr.cancel_with_children(sys.argv[1])])
"""


@pytest.mark.timeout(120)
def test_a_child_spawned_after_its_parent_was_cancelled_with_its_children_never_runs_whatever_the_timing(
        prefix: str, fx: str, tmp_path: Path) -> None:
    settings = make_settings(prefix, orphan_grace_s=3600.0)
    inline = InlineDispatcher()
    driver = inline.driver = build(settings, registry, inline)
    parent_id = driver.start_run("rd-block-then-spawn", vars={"fx": fx, "child": "rd-quick", "block_s": 30},
                                 dispatch=False)
    ticking = threading.Thread(target=lambda: driver.tick(parent_id, reason="start"))
    ticking.start()
    try:
        wait_for(lambda: fx_count(fx, parent_id, "blocked") == 1, 30, "the node to block")
        # Cancelled from another process, as from a web app.
        env = settings_env(settings, BROKER_URL, FX_URL)
        done = subprocess.run([sys.executable, "-c", CANCEL_ELSEWHERE, parent_id], cwd=str(tmp_path), env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert parent_id in done.stdout
    finally:
        redis.Redis.from_url(FX_URL).set(f"{fx}:go", 1)  # the node goes on and spawns its child
        ticking.join(60)
        redis.Redis.from_url(FX_URL).delete(f"{fx}:go")
    children = driver.run_store.list_children(parent_run_id=parent_id)
    assert driver.load(parent_id).status == RunStatus.CANCELLED
    assert len(children) == 1, inline.ticked
    child = driver.load(children[0].run_id)
    assert child.status == RunStatus.CANCELLED, \
        f"child {child.run_id} ended {child.status.value}; ticks run: {inline.ticked}, sent: {inline.recorded}"
    assert fx_count(fx, child.run_id, "ran") == 0, inline.ticked


@pytest.mark.timeout(120)
def test_a_run_cancelled_with_its_children_is_not_ticked_again_and_again(prefix: str, fx: str) -> None:
    settings = make_settings(prefix)
    app = make_app(settings)
    sr = create_scheduled_runtime(app=app, settings=settings, registry=registry, auto_start=False)
    with in_process_worker(app, settings):
        parent_id, state = sr.run(registry.get("rd-nonce-parent"), vars={"fx": fx, "child": "event"},
                                  timeout=TIMEOUT)
        assert state.status == RunStatus.WAITING  # on its child, which waits on an event
        child_id = state.waiting.details["sub_run_id"]
        cancelled = sr.cancel_with_children(parent_id)
        assert {s.run_id for s in cancelled} == {parent_id, child_id}
        # Once the cancel's ticks are done, nothing is left to send: the queue stays empty.
        wait_drained(settings.queue, timeout=20, steady=20)
        duplicates = sr.stats.duplicates
        wait_drained(settings.queue, timeout=20, steady=20)
    assert sr.stats.duplicates == duplicates
    assert sr.driver.load(parent_id).status == RunStatus.CANCELLED
    assert sr.driver.load(child_id).status == RunStatus.CANCELLED


class EagerDispatcher:
    """Runs every tick sent without an ETA at once, to its end, before ``send`` returns: the
    cancel's own tick has cascaded to the children before ``cancel_with_children`` lists them."""

    min_eta_s = 0.0

    def __init__(self) -> None:
        self.driver: Any = None

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None,
             message_id: Optional[str] = None) -> None:
        if eta is None:
            thread = threading.Thread(target=lambda: self.driver.tick(run_id, reason=reason))
            thread.start()
            thread.join()


@pytest.mark.timeout(60)
def test_a_child_the_cascade_cancelled_first_is_still_returned(prefix: str, fx: str) -> None:
    eager = EagerDispatcher()
    driver = eager.driver = build(make_settings(prefix), registry, eager)
    parent_id = driver.start_run("rd-nonce-parent", vars={"fx": fx, "child": "event"})
    parent = driver.load(parent_id)
    assert parent.status == RunStatus.WAITING, parent.status
    child_id = parent.waiting.details["sub_run_id"]
    assert driver.load(child_id).status == RunStatus.WAITING

    cancelled = driver.control.cancel_tree(parent_id)
    assert {s.run_id for s in cancelled} == {parent_id, child_id}
    assert driver.load(child_id).status == RunStatus.CANCELLED
