"""A node that holds the GIL longer than ``lease_ttl_s`` is stopped, not re-run forever
(regression, branch regress-e).

Before: one long C call that keeps the GIL (the lease keeper thread cannot run to renew)
lost the run's lease mid-node; its commit was refused, and the sweep re-ticked the
orphan, which ran the node again, forever, repeating its side effect. Now a lost lease
counts as a failed attempt: after ``tick_max_attempts`` the run ends FAILED with an error
that names ``lease_ttl_s``.

A pathological regular expression holds the GIL in CPython's ``re``; its length is
calibrated here so one match takes at least five times the lease's time to live. Real
``celery worker`` and ``celery beat`` processes.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from devkit.procs import Cluster, worker_cluster, wait_for
from tests.conftest import BROKER_URL, FX_URL, STORE_URL, fx_count, make_app, make_settings
from tests.workflows_regress_e import CATASTROPHIC, registry

LEASE_TTL_S = 0.3
MAX_ATTEMPTS = 3


def _calibrated_length(at_least_s: float) -> int:
    """The number of x's for which ``re.match(CATASTROPHIC, "x" * n)`` takes ``at_least_s``."""
    n = 16
    while True:
        started = time.perf_counter()
        re.match(CATASTROPHIC, "x" * n)
        if time.perf_counter() - started >= at_least_s:
            return n
        n += 1


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    settings = make_settings(f"gil{uuid.uuid4().hex[:8]}:", registry="tests.workflows_regress_e:registry",
                             lease_ttl_s=LEASE_TTL_S, orphan_grace_s=2.0, sweep_interval_s=0.5,
                             tick_max_attempts=MAX_ATTEMPTS)
    with worker_cluster(settings, tmp_path, request, ["w"], BROKER_URL, STORE_URL, FX_URL) as c:
        c.beat()
        yield c


def test_a_node_holding_the_gil_past_lease_ttl_ends_the_run_failed_naming_lease_ttl_s(cluster: Cluster) -> None:
    c, settings = cluster, cluster.settings
    fx = f"{settings.key_prefix}fx"
    n = _calibrated_length(5 * LEASE_TTL_S)
    sr = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry, auto_start=False)
    try:
        run_id = sr.start(workflow=registry.get("regex"), vars={"n": n, "fx": fx})
        # before: re-run forever (the bound below); now: FAILED after MAX_ATTEMPTS lost leases
        wait_for(lambda: sr.get_state(run_id).status != RunStatus.RUNNING
                 or fx_count(fx, run_id, "regex_started") >= 4 * MAX_ATTEMPTS,
                 240, "the run to end, or its node to have run 12 times", c)
        state = sr.get_state(run_id)
        runs = fx_count(fx, run_id, "regex_started")
        assert state.status == RunStatus.FAILED, f"{state.status.value} after {runs} runs of the node"
        assert "lease_ttl_s" in (state.error or ""), state.error
        assert runs <= MAX_ATTEMPTS + 2, runs          # (+2: a sweep may start one beside a lost tick)
        assert fx_count(fx, run_id, "after") == 0      # nothing ran past the node
        assert sr.stats.lease_lost >= MAX_ATTEMPTS - 1
        assert any("lease_ttl_s" in e for e in sr.stats.errors)
        # and it stays ended: a few more sweeps run nothing
        beats = sr.stats.sweeps
        wait_for(lambda: sr.stats.sweeps >= beats + 4, 60, "four more sweeps", c)
        assert fx_count(fx, run_id, "regex_started") == runs
        assert sr.get_state(run_id).status == RunStatus.FAILED
    finally:
        sr.stop()
