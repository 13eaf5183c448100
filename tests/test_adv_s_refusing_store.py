"""A store that answers but refuses writes (adversarial, round S).

``outage.find_outage`` counts only connection errors and timeouts as "the store is down"
(and then only if a PING fails). A Redis that is up but refuses every write answers PING:
out of memory (``maxmemory`` reached, ``noeviction``: ``OOM command not allowed``), a
master demoted to a replica by a failover (``READONLY``), or one running another client's
script past ``busy-reply-threshold`` (``BUSY``). A start message meeting it is not
retried: its create fails, ``_start_failed`` finds no run and raises, the task fails and
the message is acknowledged. Once the store takes writes again, no run exists for it: the
start is lost (the caller holds a task id, i.e. a run id, that never comes to be).

Real Redis (a private ``redis-server``: its ``maxmemory`` or its replication changed with
CONFIG SET / REPLICAOF, as an operator or a failover would), a real in-process Celery
worker on the shared broker.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest
from abstractruntime import RunStatus
from celery.signals import task_postrun

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.dispatch import START_TASK
from devkit.procs import wait_for
from devkit.redisproc import PrivateRedis, free_port
from tests.conftest import BROKER_URL, fx_count, make_app
from tests.workflows import registry
from tests.workflows_adv_s import registry as adv_registry

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 20.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "store", aof=False).start()
    try:
        yield server
    finally:
        server.stop()


def _refuse_writes(server: PrivateRedis, how: str) -> None:
    client = server.client()
    if how == "busy":  # another client's script runs on past busy-reply-threshold
        client.config_set("lua-time-limit", "50")  # (Redis 7's busy-reply-threshold; 6.2 knows this name)
        looping = threading.Thread(target=_loop_forever, args=(server,), daemon=True)
        looping.start()
        wait_for(lambda: "BUSY" in _ping_reply(server), TIMEOUT, "the store to answer BUSY")
    elif how == "oom":
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")
    else:  # a failover demoted it: a replica of a master that is not there
        client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))


def _loop_forever(server: PrivateRedis) -> None:
    try:
        server.client().eval("while true do end", 0)
    except Exception:  # noqa: BLE001 - SCRIPT KILL ends it with an error
        pass


def _ping_reply(server: PrivateRedis) -> str:
    try:
        return str(server.client().set("busy-probe", "1", xx=True))
    except Exception as exc:  # noqa: BLE001 - the reply we wait for is an error
        return str(exc)


def _take_writes(server: PrivateRedis, how: str) -> None:
    client = server.client()
    if how == "busy":
        client.script_kill()
        wait_for(lambda: "BUSY" not in _ping_reply(server), TIMEOUT, "the store to take writes again")
    elif how == "oom":
        client.config_set("maxmemory", "0")
    else:
        client.execute_command("REPLICAOF", "NO", "ONE")


@pytest.mark.parametrize("how", ["oom", "readonly", "busy"])
def test_a_start_meeting_a_store_that_refuses_writes_makes_its_run_once_writes_are_taken_again(
        settings: Any, store: PrivateRedis, how: str) -> None:
    from celery.contrib.testing.worker import start_worker

    settings = replace(settings, store_url=store.db_url(0), retry_backoff_s=0.2, retry_backoff_max_s=0.5)
    app = make_app(settings)
    sr = create_scheduled_runtime(app=app, settings=settings, registry=registry, auto_start=False)
    task_id = f"start-{uuid.uuid4().hex}"
    states: list[str] = []
    lock = threading.Lock()

    def seen(sender: Any = None, task_id: str = "", state: str = "", **_: Any) -> None:
        if task_id == want:
            with lock:
                states.append(state)

    want = task_id
    task_postrun.connect(seen, weak=False)
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, queues=[settings.queue],
                          shutdown_timeout=10, loglevel="WARNING"):
            _refuse_writes(store, how)
            app.send_task(START_TASK, args=["steps", {"n": 2}], task_id=task_id, queue=settings.queue)
            wait_for(lambda: states, TIMEOUT, "the start's first delivery to end")
            _take_writes(store, how)
            assert states[0] == "RETRY", states  # the message must come back, as for a store that is down
            done = wait_for(lambda: (lambda r: r if r is not None and r.status == RunStatus.COMPLETED else None)(
                sr.driver.run_store.load(task_id)), TIMEOUT, "the started run to complete")
            assert done.output == {"i": 2}
    finally:
        task_postrun.disconnect(seen)
        sr.stop()


def test_a_nodes_own_redis_refusing_writes_is_a_node_failure_not_a_store_outage(
        settings: Any, store: PrivateRedis, tmp_path: Path, fx: str) -> None:
    """The node writes to its own Redis (not the store's), which is out of memory: the node
    fails, is retried by the tick path and the run is FAILED after ``tick_max_attempts``;
    the task is never sent back as if the store were down (which would run it for ever)."""
    from celery.contrib.testing.worker import start_worker

    from abstractruntime_celery.app import make_app as plain_app
    from abstractruntime_celery.tasks import install

    own = PrivateRedis(tmp_path / "own", aof=False).start()
    try:
        own.client().config_set("maxmemory-policy", "noeviction")
        own.client().config_set("maxmemory", "1")
        settings = replace(settings, store_url=store.db_url(0), retry_backoff_s=0.05, retry_backoff_max_s=0.1,
                           retry_jitter=False, tick_max_attempts=2)
        app = install(plain_app(BROKER_URL, name=f"arc-{settings.queue}", config_module=None),
                      registry=adv_registry, settings=settings)
        sr = create_scheduled_runtime(app=app, settings=settings, registry=adv_registry, auto_start=False)
        states: list[str] = []
        task_id = f"start-{uuid.uuid4().hex}"

        def seen(sender: Any = None, task_id: str = "", state: str = "", **_: Any) -> None:
            states.append(state)

        task_postrun.connect(seen, weak=False)
        try:
            with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False,
                              queues=[settings.queue], shutdown_timeout=10, loglevel="WARNING"):
                app.send_task(START_TASK, args=["as-own-redis", {"url": own.db_url(0), "fx": fx}], task_id=task_id,
                              queue=settings.queue)
                failed = wait_for(lambda: (lambda r: r if r is not None and r.status == RunStatus.FAILED else None)(
                    sr.driver.run_store.load(task_id)), TIMEOUT, "the run to fail")
            assert "maxmemory" in str(failed.error), failed.error
            assert fx_count(fx, task_id, "tries") == 2
            assert "RETRY" not in states, states
        finally:
            task_postrun.disconnect(seen)
            sr.stop()
    finally:
        own.stop()


def test_a_node_meeting_another_stores_outage_is_a_node_failure_and_its_run_ends(
        settings: Any, store: PrivateRedis, fx: str) -> None:
    """The node reads a run of another deployment whose Redis is down: our client raises
    StoreUnavailableError *inside the node*. That is the node's failure: counted, and the run
    is FAILED after ``tick_max_attempts`` (only a commit the store dropped is not counted)."""
    from celery.contrib.testing.worker import start_worker

    from abstractruntime_celery.app import make_app as plain_app
    from abstractruntime_celery.tasks import install

    settings = replace(settings, store_url=store.db_url(0), retry_backoff_s=0.05, retry_backoff_max_s=0.1,
                       retry_jitter=False, tick_max_attempts=2)
    app = install(plain_app(BROKER_URL, name=f"arc-{settings.queue}", config_module=None),
                  registry=adv_registry, settings=settings)
    sr = create_scheduled_runtime(app=app, settings=settings, registry=adv_registry, auto_start=False)
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False,
                          queues=[settings.queue], shutdown_timeout=10, loglevel="WARNING"):
            run_id = sr.start(workflow=adv_registry.get("as-foreign-store"),
                              vars={"url": f"redis://127.0.0.1:{free_port()}/0", "fx": fx})
            failed = wait_for(lambda: (lambda r: r if r is not None and r.status == RunStatus.FAILED else None)(
                sr.driver.run_store.load(run_id)), TIMEOUT, "the run to fail")
        assert "Cannot reach Redis" in str(failed.error), failed.error
        assert fx_count(fx, run_id, "tries") == 2
    finally:
        sr.stop()


def test_a_store_busy_with_another_clients_script_is_unavailable_not_corrupt(
        settings: Any, store: PrivateRedis) -> None:
    """While the store's Redis answers BUSY, reading a run said "Run ... has a corrupt record:
    BUSY Redis is busy running a script" (``CorruptRunError``, a ValueError): a caller or an
    operator told the data is broken when the server is only busy for a while."""
    from abstractruntime_celery import CorruptRunError, StoreUnavailableError

    settings = replace(settings, store_url=store.db_url(0))
    sr = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry, auto_start=False)
    try:
        run_id = sr.driver.start_run("steps", vars={"n": 1}, dispatch=False)
        _refuse_writes(store, "busy")
        try:
            with pytest.raises(StoreUnavailableError) as caught:
                sr.get_state(run_id)
            assert not isinstance(caught.value, CorruptRunError)
        finally:
            _take_writes(store, "busy")
        assert sr.get_state(run_id).status == RunStatus.RUNNING
    finally:
        sr.stop()
