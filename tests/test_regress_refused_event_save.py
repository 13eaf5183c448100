"""An event leaves the inbox only in the save that commits it: when that save is refused
(a pause landed, or the lease was lost, between the tick's read and its save), the event
stays in the inbox, is not counted as applied, ``resume_event`` does not report it done,
and it is applied exactly once when the run is resumed or another worker takes over.

The window is opened from outside the package: the worker's workflow registry (user
code, looked up by every tick after it has read the run and its inbox under the lease
and before it saves anything) waits at a gate the test holds (tests/workflows_regress_c.py).
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from devkit.cleanup import cleanup_broker
from devkit.procs import Cluster
from tests.conftest import BROKER_URL, FX_URL, STORE_URL, _delete_prefix, make_app, make_settings
from tests.workflows_regress_c import Gate, GatedRegistry, build_registry, fx_count, registry_gate_name

pytestmark = pytest.mark.timeout(180)


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


@contextmanager
def celery_worker(app: Any, settings: Any) -> Iterator[Any]:
    from celery.contrib.testing.worker import start_worker

    with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False,
                      queues=[settings.queue], shutdown_timeout=10, loglevel="WARNING") as w:
        yield w


def inbox_len(prefix: str, run_id: str) -> int:
    return int(redis.Redis.from_url(STORE_URL).hlen(f"{prefix}inbox:{run_id}"))


def is_paused(run: Any) -> bool:
    control = ((run.vars or {}).get("_runtime") or {}).get("control") or {}
    return bool(control.get("paused"))


@pytest.fixture
def gate(prefix: str) -> Iterator[Gate]:
    g = Gate(registry_gate_name(prefix))
    yield g
    g.open()
    g.clear()


def test_an_event_stays_in_the_inbox_when_a_pause_refuses_the_save_that_applies_it(
        prefix: str, settings: Any, celery_app: Any, gate: Gate, fx: str) -> None:
    reg = build_registry(GatedRegistry, gate.name, True)  # holds worker threads only
    sr = create_scheduled_runtime(app=celery_app, settings=settings, registry=reg, auto_start=False)
    seen: dict[str, Any] = {}
    errors: list[BaseException] = []

    def operator() -> None:
        """Pauses the run while its event's tick is between its read and its save; once
        that tick is over, looks at what it left, and resumes the run."""
        try:
            wait_until(lambda: gate.entered() == 1, 30, "the event's tick to read the run")
            sr.pause_run(run_id)
            gate.open()
            wait_until(lambda: not sr.driver.coord.leases.is_held(run_id), 30, "the event's tick to end")
            seen["inbox"] = inbox_len(prefix, run_id)
            seen["applied"] = sr.stats.events_applied
            seen["state"] = sr.get_state(run_id)
            sr.resume_run(run_id)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
            gate.open()

    with celery_worker(celery_app, settings):
        run_id, state = sr.run(reg.get("rc-event"), vars={"fx": fx})
        assert state.status == RunStatus.WAITING and state.waiting.wait_key == "go"
        gate.arm()
        side = threading.Thread(target=operator, daemon=True)
        side.start()
        answered = sr.resume_event(run_id=run_id, wait_key="go", payload={"v": 1}, timeout=60)
        side.join(60)
    assert not errors, errors

    # What the refused tick left: the event, uncounted, on a paused run that never moved.
    assert seen["inbox"] == 1
    assert seen["applied"] == 0
    assert seen["state"].status == RunStatus.WAITING and is_paused(seen["state"])
    assert seen["state"].waiting.wait_key == "go"
    # resume_event returned only once the event was really applied (after resume_run).
    assert answered.status == RunStatus.COMPLETED
    assert answered.output == {"event": {"v": 1}}
    assert fx_count(fx, run_id, "done") == 1
    assert sr.stats.events_applied == 1
    assert inbox_len(prefix, run_id) == 0


# --- a lost lease: a real prefork worker frozen in the window ---------------------------------

@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    prefix = f"rc{uuid.uuid4().hex[:8]}:"
    settings = make_settings(prefix, lease_ttl_s=3.0, registry="tests.workflows_regress_c:gated_registry")
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
        Gate(registry_gate_name(prefix)).clear()
        redis.Redis.from_url(FX_URL).delete(f"{prefix}fx")


def _frozen_past_its_lease(cluster: Cluster) -> tuple[Any, str, Any, str]:
    """A run waiting on "go" gets an event whose tick, on worker w1, has read the run and
    the event under the lease; w1 is then frozen until the lease has expired, and let go.
    Returns (runtime, run id, the event's handle, fx key) once w1's tick has ended."""
    s = cluster.settings
    fx = f"{s.key_prefix}fx"
    w1 = cluster.worker("w1", concurrency=1)
    sr = create_scheduled_runtime(app=make_app(s), settings=s, registry=build_registry(), auto_start=False)
    run_id, state = sr.run(sr.registry.get("rc-event"), vars={"fx": fx}, timeout=60)
    assert state.status == RunStatus.WAITING and state.waiting.wait_key == "go"

    gate = Gate(registry_gate_name(s.key_prefix))
    gate.arm()
    handle = sr.resume_event(run_id=run_id, wait_key="go", payload={"v": 1}, wait=False)
    wait_until(lambda: gate.entered() == 1, 60, "w1's tick to read the run and its event")
    w1.kill(signal.SIGSTOP)  # a GC pause, a VM freeze: nobody renews the lease
    try:
        wait_until(lambda: not sr.driver.coord.leases.is_held(run_id), 30, "the lease to expire")
        gate.open()
    finally:
        w1.kill(signal.SIGCONT)
    wait_until(lambda: sr.stats.lease_lost >= 1, 60, "w1's tick to find its lease lost")
    wait_until(lambda: not sr.driver.coord.leases.is_held(run_id), 30, "w1's tick to end")
    return sr, run_id, handle, fx


def test_an_event_stays_in_the_inbox_when_a_lost_lease_refuses_the_save_that_applies_it(cluster: Cluster) -> None:
    sr, run_id, handle, fx = _frozen_past_its_lease(cluster)
    prefix = cluster.settings.key_prefix

    assert inbox_len(prefix, run_id) == 1
    assert redis.Redis.from_url(STORE_URL).hexists(f"{prefix}inbox:{run_id}", handle.event.event_id)
    assert sr.stats.events_applied == 0
    assert fx_count(fx, run_id, "done") == 0  # the refused tick stopped before the node after the wait
    still = sr.get_state(run_id)
    assert still.status == RunStatus.WAITING and still.waiting.wait_key == "go"
    assert not handle.done()

    cluster.worker("w2", concurrency=1)  # another worker, and the sweep that re-sends old events
    cluster.beat()
    done = handle.wait(timeout=60)
    assert done.status == RunStatus.COMPLETED
    assert done.output == {"event": {"v": 1}}
    assert sr.stats.events_applied == 1
    assert fx_count(fx, run_id, "done") == 1
    assert inbox_len(prefix, run_id) == 0

