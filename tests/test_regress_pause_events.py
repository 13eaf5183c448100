"""Paused runs and their events, in both modes (embedded, and distributed on a real
Celery worker): an event for a paused run is refused at the door and stores nothing;
an event accepted before the pause waits in the inbox and is applied once the run is
resumed; the pause wait is not an event wait; a paused parent whose child ends stays
paused and takes the child's result when resumed. A paused run is never failed by its
pause (``tick_max_attempts=1`` here: one failing tick would fail the run).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import pytest
import redis
from abstractruntime import RunState, RunStatus

from abstractruntime_celery import Settings, create_scheduled_runtime
from abstractruntime_celery.errors import RunPausedError
from devkit.cleanup import queue_len, unacked_for
from tests.conftest import BROKER_URL, STORE_URL, make_settings
from tests.workflows_regress_c import Gate, build_registry, fx_count

pytestmark = pytest.mark.timeout(120)

MODES = ["embedded", "distributed"]


@pytest.fixture
def settings(prefix: str) -> Any:
    """The distributed settings (and the in-process worker's): one failing tick fails a run."""
    return make_settings(prefix, tick_max_attempts=1)


@pytest.fixture
def gates(prefix: str) -> Iterator[Callable[[str], Gate]]:
    made: list[Gate] = []

    def gate(name: str) -> Gate:
        made.append(Gate(f"{prefix}{name}"))
        return made[-1]

    yield gate
    for g in made:
        g.open()  # let any node still held go
        g.clear()


@contextmanager
def celery_worker(app: Any, settings: Any) -> Iterator[Any]:
    """A real Celery worker (4 threads) in this process, consuming the test's queue."""
    from celery.contrib.testing.worker import start_worker

    with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False,
                      queues=[settings.queue], shutdown_timeout=10, loglevel="WARNING") as w:
        yield w


@pytest.fixture
def runtimes(request: pytest.FixtureRequest, prefix: str, settings: Any, celery_app: Any) -> Iterator[Any]:
    """``make(mode, auto_start)`` -> a ScheduledRuntime on this test's workflows: embedded
    (in-memory stores, no server) or distributed (Redis store, the test's Celery app)."""
    made: list[Any] = []

    def make(mode: str, auto_start: bool = True) -> Any:
        reg = build_registry()
        if mode == "embedded":
            sr = create_scheduled_runtime(registry=reg, auto_start=auto_start,
                                          settings=Settings(key_prefix=prefix, tick_max_attempts=1))
        else:
            sr = create_scheduled_runtime(app=celery_app, settings=settings, registry=reg, auto_start=auto_start)
        made.append(sr)
        return sr

    yield make
    for sr in made:
        sr.stop()


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


def inbox_size(sr: Any, run_id: str) -> int:
    """Unapplied events of the run, read where the driver keeps them (Redis hash or memory)."""
    coord = sr.driver.coord
    if coord.client is not None:
        return int(redis.Redis.from_url(STORE_URL).hlen(f"{sr.scheduler.settings.key_prefix}inbox:{run_id}"))
    pending = coord.inbox.pending(run_id)
    return len(getattr(pending, "events", pending))


def is_paused(run: RunState) -> bool:
    control = ((run.vars or {}).get("_runtime") or {}).get("control") or {}
    return bool(control.get("paused"))


def drained(settings: Any) -> None:
    """Every message sent to the test's queue was taken and acknowledged (tasks ack late,
    when they return), checked twice a beat apart."""
    client = redis.Redis.from_url(BROKER_URL)

    def empty() -> bool:
        return queue_len(BROKER_URL, settings.queue) == 0 and not unacked_for(client, [settings.queue])

    for _ in range(2):
        wait_until(empty, 30, "the worker to take and finish every message")
        time.sleep(0.3)
    wait_until(empty, 30, "the worker to take and finish every message")


# --- 1. an event for a paused run --------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_an_event_for_a_paused_run_is_refused_with_run_paused_error_and_nothing_is_stored(
        mode: str, runtimes: Any, request: pytest.FixtureRequest, fx: str) -> None:
    if mode == "distributed":
        request.getfixturevalue("worker")
    sr = runtimes(mode)
    run_id, state = sr.run(sr.registry.get("rc-event"), vars={"fx": fx})
    assert state.status == RunStatus.WAITING and state.waiting.wait_key == "go"
    sr.pause_run(run_id)

    with pytest.raises(RunPausedError) as refused:
        sr.respond(run_id, {"v": 1}, timeout=5)
    assert isinstance(refused.value, ValueError)
    with pytest.raises(RunPausedError):
        sr.resume_event(run_id=run_id, wait_key="go", payload={"v": 1}, timeout=5)

    assert inbox_size(sr, run_id) == 0
    paused_state = sr.get_state(run_id)
    assert paused_state.status == RunStatus.WAITING and is_paused(paused_state)

    sr.resume_run(run_id)
    done = sr.respond(run_id, {"v": 2}, timeout=15)
    assert done.status == RunStatus.COMPLETED
    assert done.output == {"event": {"v": 2}}  # the refused event was never applied
    assert fx_count(fx, run_id, "done") == 1


@pytest.mark.parametrize("mode", MODES)
def test_an_event_accepted_while_the_run_was_running_waits_through_the_pause_and_is_applied_after_resume_run(
        mode: str, runtimes: Any, celery_app: Any, settings: Any, gates: Any, fx: str) -> None:
    # Nothing ticks the run unless the test says so: embedded and stopped, or distributed
    # with no worker yet. The first tick runs here, held at the gate while the event comes.
    sr = runtimes(mode, auto_start=False)
    gate = gates("first")
    run_id = sr.start(workflow=sr.registry.get("rc-gated-event"), vars={"gate": gate.name, "fx": fx})
    first_tick = threading.Thread(target=sr.tick, args=(run_id,), daemon=True)
    first_tick.start()
    wait_until(lambda: gate.entered() == 1, 30, "the first node to run")

    # RUNNING: the event is kept for the wait the run has not reached yet.
    handle = sr.resume_event(run_id=run_id, wait_key="go", payload={"v": 1}, wait=False, timeout=0.2)
    gate.open()
    first_tick.join(30)
    assert not first_tick.is_alive()
    reached = sr.get_state(run_id)
    assert reached.status == RunStatus.WAITING and reached.waiting.wait_key == "go"
    assert inbox_size(sr, run_id) == 1  # that tick read the inbox before the event came

    sr.pause_run(run_id)
    # Now the run is ticked while paused, with the event for its wait in its inbox.
    if mode == "embedded":
        after = sr.tick(run_id)
    else:
        with celery_worker(celery_app, settings):
            drained(settings)  # the start and event messages, ticked by the worker
        after = sr.get_state(run_id)
    assert after.status == RunStatus.WAITING, (after.status, after.error)
    assert is_paused(after) and after.waiting.wait_key == "go"
    assert inbox_size(sr, run_id) == 1
    assert not handle.done()

    sr.resume_run(run_id)
    with celery_worker(celery_app, settings) if mode == "distributed" else _nothing():
        done = handle.wait(timeout=15)
    assert done.status == RunStatus.COMPLETED
    assert done.output == {"event": {"v": 1}}
    assert fx_count(fx, run_id, "done") == 1
    assert inbox_size(sr, run_id) == 0


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@pytest.mark.parametrize("mode", MODES)
def test_respond_cannot_answer_the_pause_wait_of_a_run_paused_while_running(
        mode: str, runtimes: Any, request: pytest.FixtureRequest, gates: Any, fx: str) -> None:
    if mode == "distributed":
        request.getfixturevalue("worker")
    sr = runtimes(mode)
    gate = gates("first")
    run_id = sr.start(workflow=sr.registry.get("rc-gated-event"), vars={"gate": gate.name, "fx": fx})
    wait_until(lambda: gate.entered() == 1, 30, "the first node to run")
    sr.pause_run(run_id)  # RUNNING: it now waits on the synthetic pause wait
    gate.open()
    paused_state = sr.wait_for(run_id, timeout=15)
    assert paused_state.status == RunStatus.WAITING
    assert paused_state.waiting.wait_key == f"pause:{run_id}"

    with pytest.raises(RunPausedError):
        sr.respond(run_id, {"answer": "let me through"}, timeout=5)
    with pytest.raises(ValueError):
        sr.resume_event(run_id=run_id, wait_key=f"pause:{run_id}", payload={}, timeout=5)
    assert inbox_size(sr, run_id) == 0
    still = sr.get_state(run_id)
    assert still.status == RunStatus.WAITING and is_paused(still)

    sr.resume_run(run_id)
    waiting = sr.wait_for(run_id, timeout=15, until=lambda r: r.status == RunStatus.WAITING
                          and r.waiting is not None and r.waiting.wait_key == "go")
    assert not is_paused(waiting)
    done = sr.respond(run_id, {"v": 3}, timeout=15)
    assert done.status == RunStatus.COMPLETED and done.output == {"event": {"v": 3}}
    assert fx_count(fx, run_id, "done") == 1


# --- 2. a paused parent whose child ends ------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_a_paused_parent_whose_async_child_ends_stays_paused_and_takes_the_childs_result_when_resumed(
        mode: str, runtimes: Any, celery_app: Any, settings: Any, fx: str) -> None:
    sr = runtimes(mode, auto_start=False)
    with celery_worker(celery_app, settings) if mode == "distributed" else _nothing():
        parent_id, parent = sr.run(sr.registry.get("rc-parent"), vars={"fx": fx})
        assert parent.status == RunStatus.WAITING and parent.waiting.wait_key.startswith("subworkflow:")
        child_id = parent.waiting.wait_key.split(":", 1)[1]
        if mode == "embedded":
            sr.tick(child_id)  # the async child: stopped embedded mode, so ticked here
        sr.wait_for(child_id, timeout=15, until=lambda r: r.status == RunStatus.WAITING)

        sr.pause_run(parent_id)
        child_done = sr.respond(child_id, {"c": 42}, timeout=15)
        assert child_done.status == RunStatus.COMPLETED
        # The parent is ticked now that its child has ended, while paused.
        if mode == "embedded":
            after = sr.tick(parent_id)
        else:
            drained(settings)
            after = sr.get_state(parent_id)
        assert after.status == RunStatus.WAITING, (after.status, after.error)
        assert is_paused(after) and after.waiting.wait_key == f"subworkflow:{child_id}"
        assert fx_count(fx, parent_id, "joined") == 0

        sr.resume_run(parent_id)
        done = sr.wait_for(parent_id, timeout=15, until=lambda r: r.status != RunStatus.WAITING
                           and r.status != RunStatus.RUNNING)
    assert done.status == RunStatus.COMPLETED, (done.status, done.error)
    child = done.output["child"]
    assert child["sub_run_id"] == child_id
    assert child["output"] == {"event": {"c": 42}}
    assert fx_count(fx, parent_id, "joined") == 1
