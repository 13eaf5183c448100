"""A start's lease acquire landed, its create did not (adversarial, round U).

Found: b5211b1 sent a start task's lease acquire and its run's create in one pipeline without
MULTI/EXEC (``Write.alone``), and a cut between them lost the start (the lease outlived a short
outage; the redelivered start found it held and ended). Fixed: they go in MULTI/EXEC again. Window: a TCP proxy forwards the chunk that holds both only up to
the first byte of the create command, then closes both sides: the server ran the acquire (the
lease is held under the tick's token) and never saw the create; with MULTI/EXEC it ran neither
(no EXEC). The invariants: exactly one run per start message, it completes, each step once.

Real Redis (a private redis-server behind the proxy), a real in-process Celery worker.
"""

from __future__ import annotations

import socket
import uuid
from typing import Any, Iterator

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.dispatch import START_TASK
from devkit.procs import wait_for
from devkit.redisproc import PrivateRedis
from tests.conftest import fx_count
from devkit.proxy import CutProxy, before_last_evalsha
from tests.test_adv_s_lost_reply import TIMEOUT, _runtime, _settled

pytestmark = pytest.mark.timeout(60)


class SplitProxy(CutProxy):
    """``cut_after(needles)``: the next outbound chunk holding every needle is forwarded only
    up to the start of the last ``EVALSHA`` command before the first needle, then closed.
    With ``outage_s``: then every connection is closed and new ones are refused that long
    (a Redis failover: the data stays)."""

    outage_s = 0.0

    def on_cut(self, data: bytes, src: socket.socket, dst: socket.socket) -> bool:
        cut = before_last_evalsha(data, self.cut_needles[0])
        if cut < 0:  # (no script ahead of it: forwarded as it is)
            dst.sendall(data)
            return False
        dst.sendall(data[:cut])
        if self.outage_s:
            self.go_down(self.outage_s)
        return True


@pytest.fixture
def store(tmp_path: Any) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "store", aof=False).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(store: PrivateRedis) -> Iterator[SplitProxy]:
    p = SplitProxy((store.host, store.port))
    yield p
    p.close()


def test_a_start_whose_acquire_landed_without_its_create_makes_one_run(
        settings: Any, store: PrivateRedis, proxy: SplitProxy, fx: str) -> None:
    from celery.contrib.testing.worker import start_worker

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
        assert [r.run_id for r in sr.driver.run_store.list_runs(limit=10)] == [task_id]
        assert fx_count(fx, task_id, "step") == 3
    finally:
        sr.stop()
        worker_sr.stop()


def test_a_start_whose_acquire_landed_without_its_create_then_a_short_outage_makes_one_run(
        settings: Any, store: PrivateRedis, proxy: SplitProxy, fx: str) -> None:
    """As above, and the store is unreachable for half a second after the cut (longer than
    the connection's own connect retries, much shorter than ``lease_ttl_s``=2): the release
    of the orphaned lease fails, and the start task is put back. Its next delivery finds
    the lease still held by the dead token (``LeaseBusyError``: "a start delivered twice at
    once: the other copy ticks it") and ends; no copy ticks it, and nothing knows the run."""
    from celery.contrib.testing.worker import start_worker

    proxy.outage_s = 0.5
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
        sr.stop()
        worker_sr.stop()
