"""Bad input at the entry points test_bad_input.py does not reach: ``run``/``start`` with
something that is not a workflow, ``install`` and ``Settings`` with garbage, and the
Celery tasks themselves called with garbage through ``app.send_task`` to a real
``celery worker`` subprocess (the way anyone with access to the broker can).

Each must fail with a clear error (or be dropped and logged by the worker), crash
no worker, create no run and leave every other run as it was.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis
from abstractruntime import RunStatus
from celery import Celery

from abstractruntime_celery import (
    ConfigError,
    PayloadError,
    Settings,
    UnknownWorkflowError,
    create_scheduled_runtime,
    install,
)
from abstractruntime_celery.dispatch import RESUME_TASK, START_TASK, SWEEP_TASK, TICK_TASK
from devkit.cleanup import queue_len, unacked_for
from devkit.procs import Cluster, wait_for, worker_cluster
from tests.conftest import BROKER_URL, FX_URL, STORE_URL, make_app, make_settings
from tests.workflows import registry

pytestmark = pytest.mark.timeout(150)


# --- run / start with something that is not a workflow ---------------------------------------

@pytest.mark.parametrize("bad", [None, 123, ["event"], {"workflow_id": "event"}, b"event"])
def test_run_and_start_refuse_what_is_not_a_workflow(bad: Any) -> None:
    """Regression: these raised AttributeError ('NoneType' object has no attribute 'workflow_id')."""
    sr = create_scheduled_runtime(registry=registry, auto_start=False)
    try:
        for attempt in (lambda: sr.run(bad), lambda: sr.start(workflow=bad)):
            with pytest.raises(PayloadError) as info:
                attempt()
            assert "WorkflowSpec" in str(info.value) and type(bad).__name__ in str(info.value)
        assert sr.driver.run_store.list_runs(limit=10) == []
    finally:
        sr.stop()


def test_run_and_start_take_a_registered_workflow_id() -> None:
    sr = create_scheduled_runtime(registry=registry, auto_start=False)
    try:
        run_id, state = sr.run("event", vars={"key": "k"})
        assert state.status == RunStatus.WAITING and state.workflow_id == "event"
        for attempt in (lambda: sr.run("no_such_workflow"), lambda: sr.start(workflow="no_such_workflow")):
            with pytest.raises(UnknownWorkflowError, match="no_such_workflow"):
                attempt()
        assert [r.run_id for r in sr.driver.run_store.list_runs(limit=10)] == [run_id]
    finally:
        sr.stop()


# --- install / Settings / create_scheduled_runtime with garbage --------------------------------

def test_install_refuses_garbage() -> None:
    with pytest.raises(ConfigError, match="Celery app"):
        install(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="Settings"):
        install(Celery(f"x{uuid.uuid4().hex[:6]}", set_as_current=False), settings="not settings")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="registry"):
        install(Celery(f"x{uuid.uuid4().hex[:6]}", set_as_current=False), registry=123)
    with pytest.raises(ConfigError, match="Settings"):
        create_scheduled_runtime(registry=registry, settings=123, auto_start=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("field,value", [("lease_ttl_s", "soon"), ("timer_horizon_s", None),
                                         ("sweep_batch", 1.5), ("key_prefix", ""), ("queue", ""),
                                         ("key_prefix", 7), ("max_payload_bytes", True)])
def test_settings_refuse_garbage(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Settings(**{field: value})
    assert field in str(info.value)


# --- the Celery tasks, called with garbage -------------------------------------------------------

@pytest.fixture
def one_worker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    # (a start for an unknown workflow is sent again for a worker of another deploy, within the grace)
    settings = make_settings(f"bad{uuid.uuid4().hex[:8]}:", lease_ttl_s=3.0, unknown_workflow_grace_s=3.0)
    with worker_cluster(settings, tmp_path, request, ["w"], BROKER_URL, STORE_URL, FX_URL) as c:
        yield c


HUGE = "r" * 1_000_000

GARBAGE: list[tuple[str, list[Any], dict[str, Any]]] = [
    (TICK_TASK, [], {}),                                   # missing run_id
    (TICK_TASK, [None], {}),
    (TICK_TASK, [12345], {}),
    (TICK_TASK, [["a", "list"]], {}),
    (TICK_TASK, [{"run_id": "x"}], {}),
    (TICK_TASK, ["../../etc/passwd"], {}),
    (TICK_TASK, [HUGE], {}),
    (TICK_TASK, [uuid.uuid4().hex], {}),                   # unknown run
    (TICK_TASK, ["a", "b", "c", "d"], {}),                 # too many args
    (TICK_TASK, [], {"run_id": "x", "nonsense": 1}),       # unknown kwarg
    (TICK_TASK, [uuid.uuid4().hex], {"reason": {"not": "a str"}}),
    (RESUME_TASK, [], {}),
    (RESUME_TASK, [uuid.uuid4().hex], {}),
    (RESUME_TASK, [uuid.uuid4().hex, "no-such-event"], {}),
    (RESUME_TASK, [None, None], {}),
    (RESUME_TASK, [HUGE, HUGE], {}),
    (START_TASK, [], {}),
    (START_TASK, ["no_such_workflow"], {}),
    (START_TASK, [12345], {}),
    (START_TASK, ["event", "vars that are a string"], {}),
    (START_TASK, ["event", {"blob": HUGE}], {}),           # over max_payload_bytes
    (START_TASK, ["event", {"k": 1}, "bad run id!"], {}),
    (START_TASK, ["event", {"k": 1}, HUGE], {}),
    (START_TASK, [HUGE], {}),
    (SWEEP_TASK, [1, 2, 3], {}),
]


def test_tasks_called_with_garbage_crash_nothing_and_touch_no_run(one_worker: Cluster) -> None:
    c = one_worker
    sr = create_scheduled_runtime(app=make_app(c.settings), settings=c.settings, registry=registry,
                                  auto_start=False)
    app, queue = sr.scheduler.app, c.settings.queue
    worker = c.procs[0]
    bystander, state = sr.run(registry.get("event"), vars={"key": "k"}, timeout=60)
    assert state.status == RunStatus.WAITING
    before = sr.get_state(bystander)
    runs_before = {r.run_id for r in sr.driver.run_store.list_runs(limit=1000)}

    for name, args, kwargs in GARBAGE:
        app.send_task(name, args=args, kwargs=kwargs, queue=queue)
    client = redis.Redis.from_url(BROKER_URL)
    wait_for(lambda: queue_len(BROKER_URL, queue) == 0 and not unacked_for(client, [queue]), 90,
             "every garbage message to be consumed", c)

    assert worker.alive(), worker.log()[-3000:]
    log = worker.log()
    assert "Unrecoverable error" not in log and "WorkerLostError" not in log, log[-3000:]
    # Nothing was created, the bystander did not move, and nothing was written under a huge key.
    assert {r.run_id for r in sr.driver.run_store.list_runs(limit=1000)} == runs_before
    after = sr.get_state(bystander)
    assert (after.status, after.current_node, after.updated_at) == (before.status, before.current_node,
                                                                    before.updated_at)
    store = redis.Redis.from_url(STORE_URL)
    big = [k for k in store.scan_iter(match=f"{c.settings.key_prefix}*") if len(k) > 1000]
    assert big == [], big[:2]
    # The worker still works: the bystander finishes on a real event.
    done = sr.resume_event(run_id=bystander, wait_key="k", payload={"v": 1}, timeout=60)
    assert done.status == RunStatus.COMPLETED and done.output == {"event": {"v": 1}}
    # Every refusal is named in the worker's log (a clear error, not a silent drop).
    assert "no_such_workflow" in log
    sr.stop()


def test_pickled_message_is_refused_by_a_worker_subprocess(one_worker: Cluster) -> None:
    """A pickle message pushed onto the queue (by anyone who can reach the broker) is
    refused by a real ``celery worker`` and never executed; the run is untouched."""
    c = one_worker
    sr = create_scheduled_runtime(app=make_app(c.settings), settings=c.settings, registry=registry,
                                  auto_start=False)
    run_id = sr.driver.start_run("event", vars={"key": "p"}, dispatch=False)  # RUNNING, never ticked
    before = sr.get_state(run_id)
    sr.scheduler.app.send_task(TICK_TASK, args=[run_id], queue=c.settings.queue, serializer="pickle")
    client = redis.Redis.from_url(BROKER_URL)
    wait_for(lambda: queue_len(BROKER_URL, c.settings.queue) == 0 and not unacked_for(client, [c.settings.queue]),
             60, "the pickle message to be consumed", c)
    wait_for(lambda: "pickle" in c.procs[0].log().lower(), 30, "the worker to say it refused pickle", c)
    after = sr.get_state(run_id)
    assert (after.status, after.updated_at) == (before.status, before.updated_at) == (RunStatus.RUNNING,
                                                                                     before.updated_at)
    assert sr.stats.ticks == 0 and c.procs[0].alive()
    sr.stop()
