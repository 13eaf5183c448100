"""Trying to break retention: what reaches a run after the sweep deleted it, and races
between the sweep's delete and ticks, events, control actions."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery.errors import UnknownRunError
from abstractruntime_celery.sweep import sweep
from devkit.runkeys import keys_naming, only_globals_left
from tests.conftest import STORE_URL
from tests.test_retention import _driver, _finished, _sweep_until


@pytest.fixture
def client() -> Any:
    return redis.Redis.from_url(STORE_URL, decode_responses=True)


def _deleted(driver: Any, client: Any, prefix: str, n: int = 1) -> list[str]:
    ids = _finished(driver, n)
    time.sleep(0.01)
    _sweep_until(driver, lambda: not any(keys_naming(client, prefix, rid) for rid in ids))
    return ids


def test_ticks_events_and_control_actions_for_a_deleted_run_leave_nothing_behind(prefix: str, client: Any) -> None:
    driver = _driver(prefix, retention_s=0.001)
    [rid] = _deleted(driver, client, prefix)
    for reason in ("tick", "timer", "event", "child", "sweep", "orphan"):
        with pytest.raises(UnknownRunError):
            driver.tick(rid, reason=reason)
    with pytest.raises(KeyError):
        driver.accept_event(rid, "go", {"late": True}, dispatch=False)
    for action in (driver.control.cancel, driver.control.pause):
        with pytest.raises(KeyError):
            action(rid, None)
    assert keys_naming(client, prefix, rid) == []
    assert only_globals_left(client, prefix) == []


def test_an_event_stored_just_after_the_delete_does_not_haunt_the_sweep(prefix: str, client: Any) -> None:
    """``accept_event`` checked the run (it was running), the run ended and was deleted, then
    the event was stored: its inbox keys and its ``inbox-runs`` entry must not make every
    sweep send a tick for ever."""
    from abstractruntime_celery.inbox import Event

    driver = _driver(prefix, retention_s=0.001)
    [rid] = _deleted(driver, client, prefix)
    event = Event(run_id=rid, event_id="late-1", wait_key="go", strict=True, size=2, accepted_at=time.time() - 60)
    driver.coord.inbox.put(event, b"{}", (100, 1 << 20))
    assert client.zscore(f"{prefix}inbox-runs", rid) is not None
    sent = []
    for _ in range(3):
        before = len(driver.dispatcher.sent)
        sweep(driver, force=True)
        sent.append(len(driver.dispatcher.sent) - before)
        for run_id, reason, _, message_id in driver.dispatcher.sent[before:]:
            try:
                driver.tick(run_id, reason=reason, message_id=message_id)
            except UnknownRunError:
                pass
    assert sent[-1] == 0, f"the sweep keeps sending ticks for a deleted run: {sent}"
    assert keys_naming(client, prefix, rid) == []


def test_a_sweep_racing_ticks_of_ended_runs_keeps_every_run_a_tick_holds(prefix: str, client: Any) -> None:
    """Duplicate ticks of ended runs (they hold the lease, read, find it ended) racing sweeps:
    a run is deleted only between ticks, and each tick either sees the run or none at all."""
    driver = _driver(prefix, retention_s=0.001, sweep_batch=5)
    ids = _finished(driver, 30)
    time.sleep(0.01)
    seen: dict[str, str] = {}
    stop = threading.Event()

    def ticks() -> None:
        for rid in ids:
            try:
                seen[rid] = str(driver.tick(rid, reason="tick").status)
            except UnknownRunError:
                seen[rid] = "gone"

    def sweeps() -> None:
        while not stop.is_set():
            sweep(driver, force=True)

    sweeper = threading.Thread(target=sweeps)
    sweeper.start()
    try:
        ticks()
    finally:
        stop.set()
        sweeper.join(timeout=30)
    assert set(seen.values()) <= {"completed", "gone", "None"}  # None: the sweep's claim held the run
    _sweep_until(driver, lambda: not any(keys_naming(client, prefix, rid) for rid in ids))
    assert only_globals_left(client, prefix) == []


def test_a_run_brought_back_with_a_retry_under_its_lease_survives_the_sweep(prefix: str, client: Any) -> None:
    """A retry done under the run's lease (load, set RUNNING, save fenced) while sweeps run."""
    from abstractruntime_celery.context import TickContext, entered

    driver = _driver(prefix, retention_s=0.001)
    ids = _finished(driver, 10)
    time.sleep(0.01)
    back: list[str] = []
    stop = threading.Event()

    def sweeps() -> None:
        while not stop.is_set():
            sweep(driver, force=True)

    sweeper = threading.Thread(target=sweeps)
    sweeper.start()
    try:
        for rid in ids:
            lease = driver.coord.leases.acquire(rid)
            if lease is None:
                continue
            ctx = TickContext(rid, fences={rid: lease.fence}, clears_notes=False)
            try:
                with entered(ctx):
                    run = driver.run_store.load(rid)
                    if run is not None:
                        run.status, run.output = RunStatus.RUNNING, None
                        driver.run_store.save(run)
                        ctx.queue.flush()
                        back.append(rid)
            finally:
                driver.coord.leases.release(lease, ctx)
    finally:
        stop.set()
        sweeper.join(timeout=30)
    assert back, "no run was brought back before the sweep deleted it: the race was not met"
    for rid in ids:
        run = driver.run_store.load(rid)
        assert (run is not None and run.status == RunStatus.RUNNING) if rid in back else run is None


@pytest.mark.parametrize("store", ["redis", "sqlite"])
def test_a_child_its_paused_parent_still_waits_on_is_kept_until_the_parent_takes_it(prefix: str, client: Any,
                                                                                    tmp_path: Any, store: str) -> None:
    from abstractruntime_celery.driver import build
    from tests._dispatchers import Recorder
    from tests.conftest import make_settings
    from tests.workflows import registry

    url = STORE_URL if store == "redis" else f"sqlite:///{tmp_path}/runs.db"
    driver = build(make_settings(prefix, retention_s=0.001, store_url=url), registry, Recorder())
    parent = driver.start_run("parent", vars={"child_delay": 3600}, dispatch=False)
    driver.tick(parent)
    [child] = [c.run_id for c in driver.run_store.list_children(parent_run_id=parent)]
    driver.control.pause(parent, None)
    driver.control.cancel(child, None)  # the child ends while its parent is paused
    assert driver.load(child).status == RunStatus.CANCELLED
    time.sleep(0.01)
    for _ in range(3):
        sweep(driver, force=True)
    assert driver.load(child).status == RunStatus.CANCELLED, "deleted before its parent took its result"
    driver.control.resume(parent)
    driver.tick(parent, reason="child")
    done = driver.load(parent)
    assert done.status == RunStatus.COMPLETED and done.output["child"]["output"]["cancelled"] is True
    _sweep_until(driver, lambda: driver.run_store.load(child) is None and driver.run_store.load(parent) is None)
    if store == "redis":
        assert only_globals_left(client, prefix) == []


def test_retry_run_racing_the_sweep_either_brings_the_run_back_or_finds_it_gone(prefix: str, client: Any) -> None:
    """``Control.retry`` (the CLI's ``runs retry``) on FAILED runs while sweeps delete them."""
    driver = _driver(prefix, retention_s=0.001, sweep_batch=4)
    ids = _finished(driver, 24)
    for rid in ids:  # make them FAILED, as a node that kept failing would
        run, version = driver.run_store.load_with_version(rid)
        run.status, run.error = RunStatus.FAILED, "boom"
        driver.run_store.save(run, expected_version=version)
    time.sleep(0.01)
    retried: list[str] = []
    gone: list[str] = []
    stop = threading.Event()

    def sweeps() -> None:
        while not stop.is_set():
            sweep(driver, force=True)

    sweeper = threading.Thread(target=sweeps)
    sweeper.start()
    try:
        for rid in reversed(ids):  # the newest first: the sweep walks from the oldest
            try:
                assert driver.control.retry(rid).status == RunStatus.RUNNING
                retried.append(rid)
            except UnknownRunError:
                gone.append(rid)
    finally:
        stop.set()
        sweeper.join(timeout=30)
    for _ in range(8):
        sweep(driver, force=True)
    assert sorted(retried + gone) == sorted(ids)  # (how many of each depends on the race)
    for rid in retried:
        assert driver.load(rid).status == RunStatus.RUNNING
    for rid in gone:
        assert not keys_naming(client, prefix, rid)
