"""Workers that fail fast, and errors that tell the truth (issue 13, "Operating it").

* A misconfigured ``celery worker`` process (a registry typo, an in-memory store or
  coordination, a store nobody answers at) exits non-zero at start with one line naming
  the cause, before it says "ready" and takes messages it would lose; a SQLite store
  starts with one warning naming its fencing window, and the log says where runs live.
* A start message that meets its store down goes back to the broker with a backoff, and
  makes exactly one run once the store is back; its log stays short (no tracebacks).
* A broker that refuses the first tick after the run was saved raises ``DispatchError``
  naming the run; starting it again with that id once the broker is back makes no twin.

Real ``celery worker`` subprocesses, a private redis-server we stop and start, and a
broker URL where nothing listens (then a private redis-server on that very port).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import ConfigError, DispatchError, create_scheduled_runtime
from abstractruntime_celery.dispatch import START_TASK, TICK_TASK
from abstractruntime_celery.sweep import sweep
from devkit.cleanup import cleanup_broker
from devkit.procs import Cluster, settings_env, wait_for
from devkit.redisproc import PrivateRedis, free_port
from tests.conftest import BROKER_URL, FX_URL, make_app, make_settings
from tests.workflows import registry

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 30.0
WORKER_ARGS = ["worker", "-P", "solo", "-l", "INFO", "--without-mingle", "--without-gossip", "--without-heartbeat"]
SECRET = "s3cretpw"


def _completed(sr: Any, run_id: str) -> Any:
    """The run if it exists and has completed, else None (it may not be created yet)."""
    run = sr.driver.run_store.load(run_id)
    return run if run is not None and run.status == RunStatus.COMPLETED else None


def _ours(output: str) -> list[str]:
    return [line for line in output.splitlines() if "abstractruntime_celery" in line]


@pytest.fixture
def cluster(prefix: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Worker subprocesses on this test's prefix and queue (short retry backoff)."""
    settings = make_settings(prefix, retry_backoff_s=0.2, retry_backoff_max_s=1.0)
    c = Cluster(settings, BROKER_URL, FX_URL, tmp_path)
    failed_before = request.session.testsfailed
    try:
        yield c
    finally:
        c.stop_all()
        if request.session.testsfailed > failed_before:
            c.dump_logs()
        cleanup_broker(BROKER_URL, settings.queue)


def _spawn(cluster: Cluster, tmp_path: Path, name: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    """``celery worker`` (solo pool) on the cluster's settings, ``env`` overriding them."""
    full = settings_env(cluster.settings, BROKER_URL, FX_URL)
    full.update({f"ABSTRACTRUNTIME_CELERY_{k}": v for k, v in env.items()})
    log = tmp_path / f"{name.replace(' ', '-')}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen([sys.executable, "-m", "celery", "-A", "abstractruntime_celery", *WORKER_ARGS,
                                  "-Q", cluster.settings.queue], cwd=str(tmp_path), env=full, stdout=out,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    return popen, log


def test_a_misconfigured_worker_exits_at_start_with_one_line_and_a_sqlite_one_warns(
        cluster: Cluster, tmp_path: Path) -> None:
    dead_store, dead_broker = free_port(), free_port()
    cases = {  # name: (environment that breaks it, what its one line must name)
        "registry typo": ({"REGISTRY": "tests.workflowz:registry"}, "tests.workflowz"),
        "memory store": ({"STORE_URL": "memory://"}, "memory://"),
        "dead store": ({"STORE_URL": f"redis://:{SECRET}@127.0.0.1:{dead_store}/0"}, f"127.0.0.1:{dead_store}"),
        "memory coordination": ({"STORE_URL": f"sqlite:///{tmp_path}/runs.db",
                                 "BROKER_URL": f"amqp://guest:guest@127.0.0.1:{dead_broker}//"}, "coord_url"),
    }
    sqlite_url = f"sqlite:///{tmp_path}/ok/runs.db"
    procs = {name: _spawn(cluster, tmp_path, name, env) for name, (env, _) in cases.items()}  # all at once
    sqlite, sqlite_log = _spawn(cluster, tmp_path, "sqlite", {"STORE_URL": sqlite_url})
    try:
        for name, (_, named) in cases.items():
            popen, log = procs[name]
            popen.wait(60)
            output = log.read_text(errors="replace")
            ours = _ours(output)
            assert popen.returncode != 0, f"{name}: the worker started:\n{output[-3000:]}"
            assert " ready." not in output and "Traceback" not in output, f"{name}:\n{output[-3000:]}"
            assert len(ours) == 1 and "cannot start" in ours[0] and named in ours[0], f"{name}:\n{output[-3000:]}"
            assert SECRET not in output
        wait_for(lambda: " ready." in sqlite_log.read_text() or sqlite.poll() is not None, 60,
                 "the sqlite worker to be ready")
        ours = _ours(sqlite_log.read_text())
    finally:
        for popen, _ in [*procs.values(), (sqlite, sqlite_log)]:
            if popen.poll() is None:
                os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(10)
    warnings = [line for line in ours if "WARNING" in line]
    assert len(warnings) == 1 and "sqlite" in warnings[0] and "lease_ttl_s=5s" in warnings[0], ours
    assert any("registry tests.workflows:registry" in line and "steps" in line for line in ours), ours
    assert any(f"store: sqlite ({sqlite_url})" in line for line in ours), ours
    prefix = cluster.settings.key_prefix
    broker = urlsplit(BROKER_URL)  # the suite's Redis (tests/_services.py), wherever it listens
    assert any(f"coordination: redis at {broker.hostname}:{broker.port} db 9, key prefix {prefix!r}" in line
               for line in ours), ours


def test_a_start_sent_while_the_store_is_down_makes_one_run_once_it_is_back(
        cluster: Cluster, tmp_path: Path) -> None:
    store = PrivateRedis(tmp_path / "store", password=SECRET).start()
    try:
        cluster.settings = replace(cluster.settings, store_url=store.db_url(0))
        worker = cluster.worker("w", concurrency=1)
        app = make_app(cluster.settings)
        sr = create_scheduled_runtime(app=app, settings=cluster.settings, registry=registry, auto_start=False)
        unticked = sr.driver.start_run("steps", vars={"n": 1}, dispatch=False)  # its tick is sent below
        store.stop()
        task_id = f"start-{uuid.uuid4().hex}"
        app.send_task(START_TASK, args=["steps", {"n": 2}], task_id=task_id, queue=cluster.settings.queue)
        app.send_task(TICK_TASK, args=[unticked], queue=cluster.settings.queue)
        wait_for(lambda: worker.log().count(f"start of run {task_id}: store unavailable") >= 2
                 and f"tick of run {unticked}: store unavailable" in worker.log(), TIMEOUT,
                 "the start (twice) and the tick to be retried while the store is down", cluster)
        store.start()
        done = wait_for(lambda: _completed(sr, task_id), TIMEOUT, "the started run to complete", cluster)
        assert done.output == {"i": 2}
        ticked = sr.wait_for(unticked, timeout=TIMEOUT, until=lambda r: r.status == RunStatus.COMPLETED)
        assert ticked.output == {"i": 1}
        runs = sr.driver.run_store.list_runs(limit=100)
        assert sorted(r.run_id for r in runs) == sorted([task_id, unticked])
        assert sr.stats.runs_started == 2
        log = worker.log()
        assert f"store: redis at 127.0.0.1:{store.port} db 0" in log and SECRET not in log, log[-3000:]
        lines = log.splitlines()
        first = next(i for i, line in enumerate(lines) if task_id in line)
        since = lines[first:]  # everything the worker said from the first delivery on
        tries = sum("store unavailable" in line for line in since)
        assert not any("Traceback" in line for line in since), "\n".join(since)
        # each failed delivery: received, our one line, Celery's retry line; then, for each of the
        # two messages, received and succeeded (and at most two more lines once the store is back)
        assert len(since) <= 3 * tries + 6, "\n".join(since)
        assert all(len(line) < 600 for line in since), "\n".join(since)
        sr.stop()
    finally:
        store.stop()


def test_a_dead_broker_names_the_saved_run_and_a_second_run_with_its_id_makes_no_twin(
        settings: Any, tmp_path: Path) -> None:
    from celery.contrib.testing.worker import start_worker

    from abstractruntime_celery.app import make_app as plain_app
    from abstractruntime_celery.tasks import install

    port = free_port()
    settings = replace(settings, event_redeliver_s=0.5)
    broker = PrivateRedis(tmp_path / "broker", port=port, password=SECRET, aof=False)
    app = install(plain_app(broker.db_url(0), name=f"arc-{settings.queue}", config_module=None),
                  registry=registry, settings=settings)
    sr = create_scheduled_runtime(app=app, settings=settings, registry=registry, auto_start=False)
    with pytest.raises(DispatchError) as caught:
        sr.run(registry.get("steps"), vars={"n": 2})
    err = caught.value
    assert isinstance(err, ConnectionError) and err.event_id is None
    assert err.run_id in str(err) and f"127.0.0.1:{port}" in str(err) and SECRET not in str(err)
    assert sr.get_state(err.run_id).status == RunStatus.RUNNING  # saved; its tick never left

    waiting = sr.driver.start_run("event", vars={"key": "k"}, dispatch=False)
    sr.driver.tick(waiting, follow_up=False)  # (here: it parks on its event, nothing to send)
    # an event is stored, so resume_event succeeds; its tick waits for the sweep (not the caller)
    handle = sr.resume_event(run_id=waiting, wait_key="k", payload={"v": 1}, wait=False)
    assert handle.run_id == waiting and len(sr.driver.coord.inbox.pending(waiting).events) == 1

    broker.start()
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, queues=[settings.queue],
                          shutdown_timeout=10, loglevel="WARNING"):
            run_id, state = sr.run(registry.get("steps"), vars={"n": 2}, run_id=err.run_id, timeout=TIMEOUT)
            assert run_id == err.run_id and state.status == RunStatus.COMPLETED and state.output == {"i": 2}
            wait_for(lambda: sweep(sr.driver, force=True).events, TIMEOUT, "the sweep to re-send the event")
            done = sr.wait_for(waiting, timeout=TIMEOUT, until=lambda r: r.status == RunStatus.COMPLETED)
            assert done.output == {"event": {"v": 1}}
        runs = {r.run_id for r in sr.driver.run_store.list_runs(limit=100)}
        assert runs == {err.run_id, waiting}
        assert sr.stats.runs_started == 2  # one each: the second run() found the first's run
        sr.stop()
    finally:
        broker.stop()


def test_a_distributed_runtime_refuses_coordination_in_its_own_memory(prefix: str, tmp_path: Path) -> None:
    from abstractruntime_celery.app import make_app as plain_app

    settings = make_settings(prefix, store_url=f"sqlite:///{tmp_path}/runs.db")
    app = plain_app(f"amqp://guest:guest@127.0.0.1:{free_port()}//", config_module=None)
    with pytest.raises(ConfigError, match="coord_url"):
        create_scheduled_runtime(app=app, settings=settings, registry=registry, auto_start=False)
    assert not (tmp_path / "runs.db").exists()  # refused before any store was opened
