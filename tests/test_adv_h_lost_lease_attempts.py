"""Adversarial: a node whose lease is always lost is re-run forever when its save rides
the lease release.

README ("What is guaranteed"): "A node that always outlives its lease (one long call
holding the GIL, so the lease keeper cannot renew) counts as a failure each time, and the
run is failed with an error naming ``lease_ttl_s`` instead of re-running the node forever."

It holds when a node comes after the long one (its save is flushed before that node and
refused there: ``tests/test_regress_e_gil_node.py``). It does not when the long node is the
last thing the tick does (it completes the run, or parks it on a wait): its save is queued
and goes out in the release pipeline, and ``Ticker._step`` (tick.py) has already queued
``marks.moved`` (``RedisMarks.moved``: ``DEL {p}attempts:<id> {p}unknown:<id>``) as an
*after* write of that pipeline. After writes go out whether or not the save before them
was refused (``RedisLeases.release``), so every lost-lease tick first deletes the attempt
counter and then ``Ticker._refused`` counts attempt 1 again: the counter never passes 1,
the run is never failed, and the sweep re-runs the node (and its side effects) forever.
At fault: tick.py ``Ticker._step`` queues ``moved`` unconditionally, and
``RedisMarks._clear`` puts it in ``queue.after`` instead of behind the commit (as
``lua/if_saved.lua`` does for the counters of a commit).

The lease loss is made deterministic: the node deletes its own lease key (what an expiry
under a frozen or GIL-bound node leaves). Ticks are driven here, as the sweep's orphan
pass would, one after another.
"""

from __future__ import annotations

from typing import Any

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import Settings, create_scheduled_runtime
from tests.conftest import STORE_URL, fx_count
from tests.workflows_adv_h import registry

MAX_ATTEMPTS = 3
TICKS = 8

pytestmark = pytest.mark.timeout(120)


def _drive(prefix: str, fx: str, workflow: str) -> tuple[Any, int, Any]:
    settings = Settings(store_url=STORE_URL, key_prefix=prefix, tick_max_attempts=MAX_ATTEMPTS,
                        orphan_grace_s=3600.0)
    sr = create_scheduled_runtime(settings=settings, registry=registry, auto_start=False)
    try:
        run_id, _ = sr.run(registry.get(workflow), vars={"prefix": prefix, "fx": fx}, wait=False)
        for _ in range(TICKS):  # what the orphan pass does, sweep after sweep
            if sr.get_state(run_id).status != RunStatus.RUNNING:
                break
            sr.driver.tick(run_id, reason="orphan")
        state = sr.get_state(run_id)
        attempts = sr.driver.coord.client.get(f"{prefix}attempts:{run_id}")
        return state, fx_count(fx, run_id, "ran"), attempts
    finally:
        sr.stop()


def test_a_lost_lease_before_a_flushed_save_fails_the_run_after_max_attempts(prefix: str, fx: str) -> None:
    # Holds: a node follows the one that lost its lease.
    state, ran, _ = _drive(prefix, fx, "ah-lose-then")
    assert state.status == RunStatus.FAILED and "lease_ttl_s" in (state.error or "")
    assert ran == MAX_ATTEMPTS


def test_a_lost_lease_on_the_last_node_of_a_tick_fails_the_run_after_max_attempts(prefix: str, fx: str) -> None:
    state, ran, attempts = _drive(prefix, fx, "ah-lose-last")
    assert state.status == RunStatus.FAILED and "lease_ttl_s" in (state.error or ""), (
        f"after {ran} runs of a node whose lease is always lost the run is {state.status.value}; "
        f"{{p}}attempts = {attempts!r} (tick_max_attempts={MAX_ATTEMPTS})")
    assert ran == MAX_ATTEMPTS
