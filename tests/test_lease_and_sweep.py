"""Leases and the sweep against the real Redis: the pieces the tick path stands on."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery.dispatch import LocalDispatcher
from abstractruntime_celery.driver import build
from abstractruntime_celery.errors import LeaseLostError
from abstractruntime_celery.context import Fence, TickContext, entered
from abstractruntime_celery.keys import Keys
from abstractruntime_celery.coord.redis import RedisLeases
from abstractruntime_celery.lease import LeaseKeeper
from abstractruntime_celery.sweep import sweep
from tests.conftest import STORE_URL, make_settings
from tests.workflows import registry


@pytest.fixture
def leases(prefix: str) -> RedisLeases:
    from abstractruntime_celery.stores.redis.connection import connect

    return RedisLeases(connect(STORE_URL), Keys(prefix), ttl_s=1.0)


def test_lease_is_exclusive_and_a_busy_ask_is_not_lost(leases: RedisLeases) -> None:
    first = leases.acquire("r1")
    assert first is not None
    assert leases.acquire("r1") is None  # busy: leaves a pending word
    assert leases.release(first, TickContext(first.run_id)) is True  # the holder learns a tick was asked meanwhile
    second = leases.acquire("r1")
    assert second is not None and second.token != first.token
    assert leases.release(second, TickContext(second.run_id)) is False  # nobody asked this time


def test_expired_lease_cannot_be_released_or_renewed_by_its_old_holder(leases: RedisLeases) -> None:
    old = leases.acquire("r2")
    assert old is not None
    time.sleep(1.1)
    new = leases.acquire("r2")
    assert new is not None
    assert leases.renew(old) is False and leases.release(old, TickContext(old.run_id)) is False
    assert leases.holds(new.key, new.token) and leases.is_held("r2")


def test_keeper_renews_a_lease_past_its_ttl(leases: RedisLeases) -> None:
    keeper = LeaseKeeper(leases)
    lease = leases.acquire("r3")
    assert lease is not None
    keeper.hold(lease)
    time.sleep(2.0)  # two TTLs
    assert leases.holds(lease.key, lease.token)
    assert keeper.drop(lease) is False
    leases.release(lease, TickContext(lease.run_id))


def test_redis_store_refuses_a_write_from_a_lost_lease(prefix: str, leases: RedisLeases) -> None:
    settings = make_settings(prefix, lease_ttl_s=1.0)
    driver = build(settings, registry)
    run_id = driver.start_run("event", vars={"key": "k"}, dispatch=False)
    lease = driver.coord.leases.acquire(run_id)
    assert lease is not None
    run = driver.load(run_id)
    redis.Redis.from_url(STORE_URL).delete(lease.key)  # the lease expired; someone else may hold it
    run.vars["stale"] = True
    with entered(TickContext(run_id, fences={run_id: Fence(lease.key, lease.token)})) as ctx, \
            pytest.raises(LeaseLostError, match=run_id):
        driver.run_store.save(run)
        ctx.queue.flush()
    assert "stale" not in driver.load(run_id).vars


def test_two_beats_sweep_once_per_interval(prefix: str) -> None:
    settings = make_settings(prefix, sweep_interval_s=5.0)
    drivers = [build(settings, registry) for _ in range(4)]
    reports: list[Any] = []
    barrier = threading.Barrier(len(drivers))

    def one(d: Any) -> None:
        barrier.wait()
        reports.append(sweep(d))

    threads = [threading.Thread(target=one, args=(d,)) for d in drivers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.skipped for r in reports) == [False, True, True, True]


def _redis_calls(client: redis.Redis) -> int:
    return sum(v["calls"] for v in client.info("commandstats").values())


def test_sweep_with_nothing_due_is_a_handful_of_commands(prefix: str, tmp_path: Any) -> None:
    from devkit.redisproc import PrivateRedis

    server = PrivateRedis(tmp_path / "redis", aof=False).start()  # its own: INFO counts only ours
    try:
        settings = make_settings(prefix, timer_horizon_s=60.0, store_url=server.db_url(0))
        driver = build(settings, registry)
        far = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
        for _ in range(300):  # waiting a day: beyond the horizon, nothing to send
            run_id = driver.start_run("timer", vars={"until": far}, dispatch=False)
            driver.tick(run_id)
        client = server.client()
        before = _redis_calls(client)
        report = sweep(driver, force=True)
        used = _redis_calls(client) - before - 1  # minus our own INFO
    finally:
        server.stop()
    assert report.total == 0 and report.due_now == []
    assert used < 40, f"an idle sweep over 300 far waits used {used} Redis commands"


def test_sweep_recovers_orphans_and_overdue_timers(prefix: str) -> None:
    settings = make_settings(prefix, orphan_grace_s=0.0)
    seen: list[tuple[str, str]] = []
    local = LocalDispatcher(lambda run_id, reason, _mid: seen.append((run_id, reason)), workers=1)
    driver = build(settings, registry, local)
    local.start()
    try:
        orphan = driver.start_run("event", vars={"key": "k"}, dispatch=False)  # RUNNING, never ticked
        overdue = driver.start_run("timer", vars={"until": (datetime.now(timezone.utc)
                                                            + timedelta(seconds=0.2)).isoformat()}, dispatch=False)
        driver.tick(overdue)  # parks on its timer; its timer message "is lost" (nobody consumes)
        assert driver.load(overdue).status == RunStatus.WAITING
        time.sleep(0.3)
        seen.clear()
        report = sweep(driver, force=True)
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (orphan, "orphan") in seen and (overdue, "sweep") in seen
        assert report.orphans == 1 and report.timers >= 1
    finally:
        local.stop()


def test_ticks_survive_a_redis_that_forgot_its_scripts(prefix: str) -> None:
    """After a Redis restart (SCRIPT FLUSH here) pipelined scripts are loaded again."""
    driver = build(make_settings(prefix), registry)
    run_id = driver.start_run("event", vars={"key": "k"}, dispatch=False)
    redis.Redis.from_url(STORE_URL).script_flush()
    assert driver.tick(run_id).status == "waiting"
    redis.Redis.from_url(STORE_URL).script_flush()
    driver.accept_event(run_id, "k", {"v": 1}, dispatch=False)
    assert driver.tick(run_id).status == "completed"
    assert not driver.coord.leases.is_held(run_id)


def test_a_corrupt_record_read_with_the_lease_still_releases_it(prefix: str) -> None:
    from abstractruntime_celery import CorruptRunError

    driver = build(make_settings(prefix), registry)
    redis.Redis.from_url(STORE_URL).set(f"{prefix}run:broken", "not a hash")
    with pytest.raises(CorruptRunError, match="broken"):
        driver.tick("broken")
    assert not driver.coord.leases.is_held("broken")
