"""Regression: the sweep starved (each pass read the front of its index, then filtered).

Every pass is tested with more runs it cannot move than ``sweep_batch`` (5) in front of
a run it must move, whose message was lost. The dispatcher sends nothing (it records
what the sweep asks for), so nothing moves unless the sweep reaches it. The run must be
reached within ``ceil(stuck / sweep_batch) + 1`` sweeps, and each sweep must read
O(``sweep_batch``) records (counted as the run-record reads, HGET/HMGET/HGETALL, each
sweep sends to Redis, and as ``SweepReport.read``), however many stuck runs there are.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from abstractruntime import WorkflowSpec

from abstractruntime_celery.driver import build
from abstractruntime_celery.sweep import sweep
from bench.roundtrips import count_roundtrips
from tests._regress_d import Recorder
from tests.conftest import STORE_URL, make_settings
from tests.workflows import timer_done, timer_wait
from tests.workflows_regress_d import build as build_registry

BATCH = 5
STUCK = 12
#: Record reads one sweep may make: a batch per pass, and the children of a batch of
#: parents. Reading every stuck run (24 in the larger tests) would exceed it.
READ_BOUND = 2 * BATCH + 4
RECORD_READS = ("HGET", "HMGET", "HGETALL")


def _iso_in(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


def _record_reads(rt: Any, db: int = 10) -> int:
    return sum(1 for trip_db, names in rt.trips if trip_db == db for n in names if n in RECORD_READS)


def sweeps_until_sent(driver: Any, recorder: Recorder, target: str, stuck: int) -> tuple[int, list[Any]]:
    """Sweep until the sweep asks for a tick of ``target``, at most ``ceil(stuck/BATCH)+1``
    times. Returns (sweeps it took or 0, [(record reads, SweepReport.read)] per sweep)."""
    bound = math.ceil(stuck / BATCH) + 1
    seen: list[Any] = []
    for n in range(1, bound + 1):
        recorder.sent.clear()
        with count_roundtrips() as rt:
            report = sweep(driver, force=True)
        seen.append((_record_reads(rt), dict(report.read)))
        if target in recorder.run_ids():
            return n, seen
    return 0, seen


def assert_reached_with_bounded_reads(driver: Any, recorder: Recorder, target: str, stuck: int) -> None:
    took, seen = sweeps_until_sent(driver, recorder, target, stuck)
    bound = math.ceil(stuck / BATCH) + 1
    assert took, (f"run {target} was not reached within {bound} sweeps with {stuck} stuck runs in the "
                  f"store (record reads, SweepReport.read per sweep: {seen})")
    for reads, by_pass in seen:
        assert reads <= READ_BOUND, f"a sweep read {reads} run records with sweep_batch={BATCH}: {seen}"
        assert all(n <= BATCH for n in by_pass.values()), f"a pass read more than sweep_batch: {seen}"


def test_a_timer_behind_more_paused_and_unknown_workflow_runs_than_the_batch_is_armed(prefix: str) -> None:
    # Workers first knew "rd-retired"; the sweeping process's registry no longer does.
    registry = build_registry()
    retired = WorkflowSpec("rd-retired", "wait", {"wait": timer_wait, "done": timer_done})
    old_registry = build_registry()
    old_registry.register(retired)
    # The ticking driver's horizon is 30 s: the target's timer (60 s away) gets no message
    # then; only the sweep (horizon 120 s) arms it.
    settings = make_settings(prefix, sweep_batch=BATCH, timer_horizon_s=30.0, lease_ttl_s=60.0)
    ticker = build(settings, old_registry)
    stuck = []
    for i in range(STUCK // 2):  # paused runs waiting on a timer, earliest first
        run_id = ticker.start_run("timer", vars={"until": _iso_in(10 + i)}, dispatch=False)
        ticker.tick(run_id)
        ticker.control.pause(run_id)
        stuck.append(run_id)
    for i in range(STUCK // 2):  # runs of a workflow the sweeping process does not know
        run_id = ticker.start_run("rd-retired", vars={"until": _iso_in(20 + i)}, dispatch=False)
        ticker.tick(run_id)
        stuck.append(run_id)
    target = ticker.start_run("timer", vars={"until": _iso_in(60)}, dispatch=False)
    ticker.tick(target)
    assert all(ticker.load(r).status.value == "waiting" for r in stuck + [target])

    recorder = Recorder()
    sweeper = build(replace(settings, timer_horizon_s=120.0), registry, recorder)
    assert_reached_with_bounded_reads(sweeper, recorder, target, STUCK)
    assert (target, "timer") in recorder.sent


def test_a_parent_whose_child_ended_is_resumed_behind_more_parents_of_live_children_than_the_batch(
        prefix: str) -> None:
    registry = build_registry()
    settings = make_settings(prefix, sweep_batch=BATCH, orphan_grace_s=3600.0)
    driver = build(settings, registry)

    def parent_of_a_live_child() -> str:
        parent = driver.start_run("rd-nonce-parent", vars={"child": "rd-nap"}, dispatch=False)
        driver.tick(parent)  # spawns the child (RUNNING, its message lost) and waits on it
        assert driver.load(parent).waiting.reason.value == "subworkflow"
        return parent

    older = [parent_of_a_live_child() for _ in range(STUCK)]
    time.sleep(0.01)
    target = driver.start_run("rd-nonce-parent", vars={"child": "rd-quick"}, dispatch=False)
    driver.tick(target)
    child = driver.load(target).waiting.details["sub_run_id"]
    time.sleep(0.01)
    newer = [parent_of_a_live_child() for _ in range(STUCK)]
    # The child ends; its message to the parent is lost (nothing consumes the dispatcher's).
    assert driver.tick(child).status == "completed"
    assert driver.load(target).status.value == "waiting"

    recorder = Recorder()
    sweeper = build(settings, registry, recorder)
    assert_reached_with_bounded_reads(sweeper, recorder, target, len(older) + len(newer))
    assert (target, "child") in recorder.sent


def test_an_event_behind_more_early_events_for_later_waits_than_the_batch_is_redelivered(prefix: str) -> None:
    registry = build_registry()
    settings = make_settings(prefix, sweep_batch=BATCH, event_redeliver_s=0.0)
    driver = build(settings, registry)
    stuck = []
    for _ in range(STUCK):  # each sleeps on a 10 min timer and holds an event for its later wait
        run_id = driver.start_run("timer-then-event", vars={"delay": 600, "key": "late"}, dispatch=False)
        driver.tick(run_id)
        driver.accept_event(run_id, "late", {"early": True}, dispatch=False)
        stuck.append(run_id)
    time.sleep(0.01)
    target = driver.start_run("event", vars={"key": "go"}, dispatch=False)
    driver.tick(target)
    driver.accept_event(target, "go", {"v": 1}, dispatch=False)  # durable, its message lost
    time.sleep(0.01)

    recorder = Recorder()
    sweeper = build(settings, registry, recorder)
    assert_reached_with_bounded_reads(sweeper, recorder, target, STUCK)
    assert (target, "event") in recorder.sent


def test_an_orphan_behind_more_busy_running_runs_than_the_batch_is_recovered(prefix: str) -> None:
    registry = build_registry()
    settings = make_settings(prefix, sweep_batch=BATCH, orphan_grace_s=0.5, lease_ttl_s=120.0)
    driver = build(settings, registry)

    def busy() -> str:  # RUNNING, and another worker holds its lease
        run_id = driver.start_run("rd-quick", dispatch=False)
        assert driver.coord.leases.acquire(run_id) is not None
        return run_id

    older = [busy() for _ in range(STUCK)]
    time.sleep(0.01)
    target = driver.start_run("rd-quick", dispatch=False)  # RUNNING, no lease, its message lost
    time.sleep(0.01)
    newer = [busy() for _ in range(STUCK)]
    time.sleep(0.6)  # every run is now idle longer than orphan_grace_s

    recorder = Recorder()
    sweeper = build(settings, registry, recorder)
    assert_reached_with_bounded_reads(sweeper, recorder, target, len(older) + len(newer))
    assert (target, "orphan") in recorder.sent
    assert not recorder.run_ids() & set(older + newer), "a run another worker holds was sent as an orphan"


def test_an_orphan_behind_more_busy_runs_than_ten_batches_is_recovered_on_a_sqlite_store(
        prefix: str, tmp_path: Path) -> None:
    registry = build_registry()
    stuck = 11 * BATCH  # more than GENERIC_READ_FACTOR (10) batches
    settings = make_settings(prefix, store_url=f"sqlite:///{tmp_path / 'runs.db'}", coord_url=STORE_URL,
                             sweep_batch=BATCH, orphan_grace_s=0.5, lease_ttl_s=120.0)
    recorder = Recorder()
    driver = build(settings, registry, recorder)
    target = driver.start_run("rd-quick", dispatch=False)  # RUNNING, no lease, its message lost
    time.sleep(0.01)
    newer = []
    for _ in range(stuck):
        run_id = driver.start_run("rd-quick", dispatch=False)
        assert driver.coord.leases.acquire(run_id) is not None  # another worker holds it
        newer.append(run_id)
    time.sleep(0.6)
    bound = math.ceil(stuck / BATCH) + 1
    for n in range(1, bound + 1):
        recorder.sent.clear()
        sweep(driver, force=True)
        if (target, "orphan") in recorder.sent:
            break
    else:
        pytest.fail(f"orphan {target} was not reached within {bound} sweeps behind {stuck} busy runs")
    assert not recorder.run_ids() & set(newer)
