"""``control_ttl_s=0`` ("read the cancel/pause state before every node") against a frozen
worker, on real ``celery worker`` subprocesses.

With 0, AbstractRuntime's control probe at the top of each step reads Redis, and that read
carries the tick's queued save of the step before (``WriteQueue.send_before``). When the
worker was frozen past its lease, that save is refused (``LeaseLostError``) inside the
probe, and AbstractRuntime swallows every error of its probe; the queue is then empty, so
``_SavedFirst.get_node`` has nothing to send, and the next node runs on state that is not in
the store, in a process that no longer holds the lease, after another worker already ran it.
With the default (0.25 s) the same freeze is caught before that node (tests/test_e2e_processes.py).
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from devkit.cleanup import cleanup_broker, queue_len, unacked_for
from devkit.procs import Cluster, wait_for
from tests.conftest import BROKER_URL, FX_URL, STORE_URL, _delete_prefix, fx_count, make_app, make_settings
from tests.workflows import registry

TIMEOUT = 60.0

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    prefix = f"af{uuid.uuid4().hex[:8]}:"
    settings = make_settings(prefix, lease_ttl_s=3.0, control_ttl_s=0.0)
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
        redis.Redis.from_url(FX_URL).delete(f"{prefix}fx")


def test_with_control_ttl_s_zero_a_worker_frozen_past_its_lease_never_runs_the_next_node(cluster: Cluster) -> None:
    frozen = cluster.worker("frozen", concurrency=1)
    cluster.beat()
    sr = create_scheduled_runtime(app=make_app(cluster.settings), settings=cluster.settings, registry=registry,
                                  auto_start=False)
    fx = f"{cluster.settings.key_prefix}fx"

    run_id, _ = sr.run(registry.get("slow"), vars={"sleep": 3, "fx": fx}, wait=False)
    wait_for(lambda: fx_count(fx, run_id, "work_started") == 1, TIMEOUT, "the slow node to start", cluster)
    frozen.kill(signal.SIGSTOP)  # its lease keeper stops renewing; the lease expires
    try:
        cluster.worker("live", concurrency=1)
        done = sr.wait_for(run_id, timeout=TIMEOUT, until=lambda r: r.status == RunStatus.COMPLETED)
    finally:
        frozen.kill(signal.SIGCONT)
    wait_for(lambda: fx_count(fx, run_id, "work_done") == 2, TIMEOUT, "the frozen tick to wake up", cluster)
    client = redis.Redis.from_url(BROKER_URL)
    wait_for(lambda: queue_len(BROKER_URL, cluster.settings.queue) == 0
             and not unacked_for(client, [cluster.settings.queue]), TIMEOUT, "the queue to drain", cluster)
    wait_for(lambda: sr.stats.lease_lost >= 1, TIMEOUT, "the frozen tick to end", cluster)

    after = sr.get_state(run_id)
    assert after.status == RunStatus.COMPLETED and after.updated_at == done.updated_at
    assert fx_count(fx, run_id, "finish") == 1  # the frozen worker must stop before "finish"
