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
import threading
import time
import uuid
from typing import Any, Iterator

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.dispatch import START_TASK
from devkit.procs import wait_for
from devkit.redisproc import PrivateRedis
from tests.conftest import fx_count
from tests.test_adv_s_lost_reply import TIMEOUT, CutProxy, _runtime, _settled

pytestmark = pytest.mark.timeout(60)


class SplitProxy(CutProxy):
    """``cut_after(needles)``: the next outbound chunk holding every needle is forwarded only
    up to the start of the last ``EVALSHA`` command before the first needle, then closed.
    With ``outage_s``: then every connection is closed and new ones are refused that long
    (a Redis failover: the data stays)."""

    outage_s = 0.0
    down_until = 0.0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self.down_until:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _down(self) -> None:
        self.down_until = time.monotonic() + self.outage_s
        for s in list(self._socks):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                cut = -1
                if outbound:
                    with self._lock:
                        if self._needles is not None and all(n in data for n in self._needles):
                            at = data.find(self._needles[0])
                            cut = data.rfind(b"*", 0, data.rfind(b"EVALSHA", 0, at))
                            self._needles = None
                            self.cuts += 1
                if cut >= 0:
                    dst.sendall(data[:cut])
                    src.shutdown(socket.SHUT_RDWR)
                    if self.outage_s:
                        self._down()
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


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
