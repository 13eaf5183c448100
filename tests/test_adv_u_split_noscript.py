"""A start's acquire answered NOSCRIPT, its create ran (adversarial, round U).

Found: b5211b1 sent a start task's lease acquire and its run's create in one pipeline without
MULTI/EXEC, so another client's command could run between them (fixed: MULTI/EXEC again). Redis runs the complete
commands it has read from a client, then serves others: a pipeline split across reads (a
create with large vars is over the server's 16 KB read; here a TCP proxy forwards the
acquire's bytes, waits for its reply, then the create's) lets another process's work land
in between. Window: the scripts were flushed (a restart, SCRIPT FLUSH) just before the
pipeline, so the acquire answers NOSCRIPT and takes nothing; another worker's ``preload``
lands between the two commands; the create then runs, finds no lease under its token and is
refused (-1). ``settle`` runs the acquire again (it takes the lease) and raises the create's
LeaseLostError: the tick ends as "lease lost", the run does not exist, the start message is
done. With MULTI/EXEC no command of another client ran between them: both answered NOSCRIPT
and both ran again, in order. Invariant: one run per start message, and it completes.

Real Redis (a private redis-server behind the proxy), a real in-process Celery worker.
"""

from __future__ import annotations

import socket
import uuid
from typing import Any, Iterator

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery.dispatch import START_TASK
from abstractruntime_celery.scripts import preload
from devkit.procs import wait_for
from devkit.redisproc import PrivateRedis
from tests.conftest import fx_count
from devkit.proxy import CutProxy, before_last_evalsha
from tests.test_adv_s_lost_reply import TIMEOUT, _runtime, _settled

pytestmark = pytest.mark.timeout(60)


class SplitProxy(CutProxy):
    """``cut_after(needles)``: the next outbound chunk holding every needle is split before the
    last ``EVALSHA`` command ahead of the first needle: ``before()`` runs, the first part goes,
    its reply comes back, ``between()`` runs, then the rest goes."""

    def __init__(self, upstream: tuple[str, int], before: Any, between: Any) -> None:
        super().__init__(upstream)
        self.before, self.between = before, between

    def on_cut(self, data: bytes, src: socket.socket, dst: socket.socket) -> bool:
        cut = before_last_evalsha(data, self.cut_needles[0])
        if cut > 0:
            self.before()
            self.replied.clear()
            dst.sendall(data[:cut])
            self.replied.wait(10)  # (the acquire ran and answered)
            self.between()
            data = data[cut:]
        dst.sendall(data)
        return False


@pytest.fixture
def store(tmp_path: Any) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "store", aof=False).start()
    try:
        yield server
    finally:
        server.stop()


def test_a_start_whose_acquire_met_noscript_and_whose_create_ran_makes_one_run(
        settings: Any, store: PrivateRedis, fx: str) -> None:
    from celery.contrib.testing.worker import start_worker

    direct = redis.Redis.from_url(store.db_url(0))
    proxy = SplitProxy((store.host, store.port), before=direct.script_flush, between=lambda: preload(direct))
    app, worker_sr = _runtime(settings, proxy.url(0))
    _, sr = _runtime(settings, store.db_url(0))
    task_id = f"start-{uuid.uuid4().hex}"
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, queues=[settings.queue],
                          shutdown_timeout=10, loglevel="WARNING"):
            worker_sr.driver.run_store.load("warm-up")
            proxy.cut_after('"drop_lease"', task_id)
            app.send_task(START_TASK, args=["as-steps", {"n": 3, "fx": fx}], task_id=task_id,
                          queue=settings.queue)
            done = wait_for(lambda: _settled(sr, task_id), TIMEOUT, "the started run to complete")
        assert proxy.cuts == 1
        assert done.status == RunStatus.COMPLETED and done.output == {"i": 3}
        assert fx_count(fx, task_id, "step") == 3
    finally:
        print("stats", {k: direct.hgetall(k) for k in direct.scan_iter("*stats*")})
        proxy.close()
        sr.stop()
        worker_sr.stop()
