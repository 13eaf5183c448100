"""A tick whose lease acquire meets NOSCRIPT (the Redis restarted, or SCRIPT FLUSH) reads
the run in the same pipeline *before* the acquire actually runs: the acquire is run again
after the reply (``scripts.settle``), and the tick then works on what it read while another
process still held the lease.

The window is opened from outside the package: a private ``redis-server`` has its scripts
flushed (what every restart does) and the late tick's Redis connection goes through a TCP
proxy that holds the re-sent acquire on the wire (a slow network, or a process frozen
between the reply and the retry) while the lease holder commits and lets go.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery import Settings
from abstractruntime_celery.driver import build
from devkit.redisproc import PrivateRedis
from tests import workflows_adv_f as wf
from tests import workflows_regress_c as rc
from tests._adv_f import HoldProxy, Side, wait_until
from tests.conftest import FX_URL

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis", aof=False).start()
    yield server
    server.stop()


@pytest.fixture
def proxy(private_redis: PrivateRedis) -> Iterator[HoldProxy]:
    p = HoldProxy((private_redis.host, private_redis.port))
    yield p
    p.close()


@pytest.fixture
def fx_key() -> Iterator[str]:
    key = f"af{uuid.uuid4().hex[:8]}:fx"
    yield key
    redis.Redis.from_url(FX_URL).delete(key)


@pytest.fixture
def gate() -> Iterator[rc.Gate]:
    g = rc.Gate(f"af{uuid.uuid4().hex[:8]}:gate")
    yield g
    g.open()
    g.clear()


def test_a_tick_whose_lease_acquire_meets_noscript_never_commits_over_the_run_the_previous_holder_committed(
        private_redis: PrivateRedis, proxy: HoldProxy, gate: rc.Gate, fx_key: str) -> None:
    prefix = f"af{uuid.uuid4().hex[:8]}:"
    settings = Settings(store_url=private_redis.db_url(1), key_prefix=prefix, lease_ttl_s=20.0,
                        queue=f"{prefix}q")
    # Worker 2 holds the run's lease while the scripts are flushed; worker 1 comes late.
    w2 = build(settings, wf.build_registry(rc.GatedRegistry, gate.name, True))
    w1 = build(replace(settings, store_url=proxy.url(1)), wf.build_registry())

    run_id = w2.start_run("af-loop", vars={"fx": fx_key, "n": 2}, dispatch=False)
    assert w2.tick(run_id).status == "waiting"
    w2.accept_event(run_id, "k", {"v": 1}, dispatch=False)

    gate.arm()
    tick2 = Side(lambda: w2.tick(run_id))  # takes the lease, reads the run and event 1, waits at the gate
    wait_until(lambda: gate.entered() == 1, 30, "worker 2's tick to hold the lease")
    private_redis.client(1).script_flush()  # what a Redis restart does to every loaded script

    proxy.hold([b"EVALSHA", f"{prefix}lease:{run_id}".encode()], nth=2)  # worker 1's acquire, sent again
    tick1 = Side(lambda: w1.tick(run_id))
    assert proxy.held.wait(30), "worker 1 never sent its acquire again"

    gate.open()  # worker 2 applies event 1, runs the node after it, parks on "k" again, releases
    assert tick2.result().status == "waiting"
    committed = w2.load(run_id)
    assert committed.vars["got"] == [{"v": 1}]
    w2.accept_event(run_id, "k", {"v": 2}, dispatch=False)

    proxy.let_go()  # worker 1's acquire now finds the lease free
    tick1.result()
    for _ in range(3):  # whatever is left to do
        w2.tick(run_id)

    final = w2.load(run_id)
    assert final.vars.get("got") == [{"v": 1}, {"v": 2}], final.vars.get("got")
    assert final.status == RunStatus.COMPLETED
    assert wf.fx_count(fx_key, run_id, "got") == 2
