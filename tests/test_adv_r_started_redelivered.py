"""``runs_started`` counts each run created, once. A start delivered to a worker creates the
run under a reserved lease (the create rides ahead of the first node) but counts it with the
tick's other counters, in the lease release (``ctx.on_created`` -> ``stats.incr(ctx=ctx)``).
A worker killed while the first node runs (OOM, a deploy's SIGKILL) has created the run and
never counted it; the start message, delivered again, finds the run existing and does not
count it either: ``runs_started`` stayed one short for good. Fixed (store and coordination
sharing one Redis and prefix): the start's create counts it in its own step, as
``Driver.start_run``'s does (``save_run.lua`` option ``started``).

Real processes: the first delivery is a subprocess killed with SIGKILL at a gate inside the
node; the redelivery is ``start_and_tick`` (what the start task does) in this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Iterator

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery import Settings
from abstractruntime_celery.driver import build
from tests import workflows_adv_f as wf
from tests import workflows_regress_c as rc
from tests.conftest import STORE_URL

pytestmark = pytest.mark.timeout(60)

FIRST_DELIVERY = """
import sys
from abstractruntime_celery import Settings
from abstractruntime_celery.driver import build
from tests import workflows_adv_f as wf
prefix, run_id, gate = sys.argv[1:4]
d = build(Settings(store_url=%r, key_prefix=prefix, queue=prefix + "q", lease_ttl_s=1.0), wf.build_registry())
d.start_and_tick("af-child", vars={"gate": gate}, run_id=run_id)
"""


@pytest.fixture
def gate() -> Iterator[rc.Gate]:
    g = rc.Gate(f"ar{uuid.uuid4().hex[:8]}:gate")
    yield g
    g.open()
    g.clear()


def test_a_start_redelivered_after_a_killed_worker_counts_its_run_once(prefix: str, gate: rc.Gate) -> None:
    run_id = uuid.uuid4().hex
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    first = subprocess.Popen([sys.executable, "-c", FIRST_DELIVERY % STORE_URL, prefix, run_id, gate.name], env=env)
    try:
        deadline = time.monotonic() + 30
        while gate.entered() < 1:
            assert first.poll() is None and time.monotonic() < deadline, "the first delivery never reached its node"
            time.sleep(0.02)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    gate.open()

    again = build(Settings(store_url=STORE_URL, key_prefix=prefix, queue=f"{prefix}q", lease_ttl_s=1.0),
                  wf.build_registry())
    deadline = time.monotonic() + 20
    while True:  # the killed worker's lease expires (lease_ttl_s), then the redelivery ticks the run
        _, outcome = again.start_and_tick("af-child", vars={"gate": gate.name}, run_id=run_id)
        if outcome.skipped != "busy" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert again.load(run_id).status == RunStatus.COMPLETED
    started = redis.Redis.from_url(STORE_URL).hget(f"{prefix}stats", "runs_started")
    assert int(started or 0) == 1, started  # (seen: 0)
