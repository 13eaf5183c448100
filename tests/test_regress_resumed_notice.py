"""``on_run_resumed`` is not told of a tick whose final save (sent with its lease
release) was refused.

A real prefork worker applies an event to a waiting run; the node after the wait is held
at a gate while the run is paused; with ``control_ttl_s`` long, the tick trusts its own
confirmation of the run's control state, so the refusal comes from the store, at the
release. Nothing that tick did may be announced as a resume (and ``resume_run`` puts the
run back to RUNNING at the held node, which is no resume from a wait either).
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis
from abstractruntime import RunState, RunStatus

from abstractruntime_celery import create_scheduled_runtime
from devkit.cleanup import cleanup_broker
from devkit.procs import Cluster
from tests.conftest import BROKER_URL, FX_URL, STORE_URL, _delete_prefix, make_app, make_settings
from tests.workflows_regress_c import Gate, build_registry

pytestmark = pytest.mark.timeout(150)


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    prefix = f"rc{uuid.uuid4().hex[:8]}:"
    settings = make_settings(prefix, control_ttl_s=3600.0, registry="tests.workflows_regress_c:registry")
    c = Cluster(settings, BROKER_URL, FX_URL, tmp_path)
    failed_before = request.session.testsfailed
    try:
        yield c
    finally:
        c.stop_all()
        if request.session.testsfailed > failed_before:
            c.dump_logs()
        cleanup_broker(BROKER_URL, settings.queue)
        _delete_prefix(STORE_URL, prefix)
        Gate(f"{prefix}done").clear()
        redis.Redis.from_url(FX_URL).delete(f"{prefix}fx")


def test_on_run_resumed_is_not_called_for_a_tick_whose_final_save_was_refused(cluster: Cluster) -> None:
    s = cluster.settings
    cluster.worker("w", concurrency=1)
    heard: list[RunState] = []
    lock = threading.Lock()

    def on_run_resumed(state: RunState) -> None:
        with lock:
            heard.append(state)

    sr = create_scheduled_runtime(app=make_app(s), settings=s, registry=build_registry(),
                                  on_run_resumed=on_run_resumed, auto_start=True)
    try:
        gate = Gate(f"{s.key_prefix}done")
        run_id, state = sr.run(sr.registry.get("rc-event-gated-done"),
                               vars={"gate": gate.name, "fx": f"{s.key_prefix}fx"}, timeout=60)
        assert state.status == RunStatus.WAITING and state.waiting.wait_key == "go"

        sr.resume_event(run_id=run_id, wait_key="go", payload={"v": 1}, wait=False)
        wait_until(lambda: gate.entered() == 1, 60, "the node after the wait to run")
        sr.pause_run(run_id)
        gate.open()
        wait_until(lambda: sr.stats.controlled >= 1, 60, "the tick's final save to be refused")
        wait_until(lambda: not sr.driver.coord.leases.is_held(run_id), 30, "the refused tick to end")
        paused_state = sr.get_state(run_id)
        assert paused_state.status == RunStatus.WAITING
        assert paused_state.waiting.wait_key == f"pause:{run_id}"

        sr.resume_run(run_id)
        done = sr.wait_for(run_id, timeout=60, until=lambda r: r.status == RunStatus.COMPLETED)
        assert done.output == {"event": {"v": 1}}

        # A bystander's event resume, noticed after everything above: notices are heard in
        # the order they were published, so once it is heard, anything the refused tick
        # published has been heard too.
        other_id, _ = sr.run(sr.registry.get("rc-event"), vars={"key": "later"}, timeout=60)
        sr.resume_event(run_id=other_id, wait_key="later", payload={"v": 2}, timeout=60)
        wait_until(lambda: any(h.run_id == other_id for h in heard), 30, "on_run_resumed to hear of the bystander")
        with lock:
            mine = [(h.status, h.waiting) for h in heard if h.run_id == run_id]
        assert mine == []
    finally:
        sr.stop()
