"""Retention: a run that ended leaves Redis, with every key it owns, ``retention_s`` after it
ended; waiting runs, runs someone is bringing back, and parents of children left stay."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pytest
import redis
from abstractruntime import RunStatus, StepPlan, WorkflowRegistry, WorkflowSpec

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.driver import build
from abstractruntime_celery.errors import VersionConflictError
from abstractruntime_celery.retention import RedisRetention
from abstractruntime_celery.sweep import sweep
from devkit.runkeys import keys_naming, only_globals_left, owned_keys
from tests._dispatchers import Recorder
from tests.conftest import STORE_URL, make_settings
from tests.workflows import registry

RETENTION_S = 1.0


@pytest.fixture
def settings(prefix: str) -> Any:
    return make_settings(prefix, retention_s=RETENTION_S)


@pytest.fixture
def sr(celery_app: Any, settings: Any, worker: Any) -> Any:
    rt = create_scheduled_runtime(app=celery_app, settings=settings, registry=registry, auto_start=False)
    yield rt
    rt.stop()


@pytest.fixture
def client() -> Any:
    return redis.Redis.from_url(STORE_URL, decode_responses=True)


def _sweep_until(driver: Any, done: Callable[[], bool], *, deadline_s: float = 20.0) -> int:
    """Sweep (forced: the cluster lock is for beat) until ``done``; how many sweeps it took."""
    end, n = time.monotonic() + deadline_s, 0
    while not done():
        assert time.monotonic() < end, "retention never finished"
        sweep(driver, force=True)
        n += 1
        if not done():
            time.sleep(0.1)
    return n


def _quick(run: Any, ctx: Any) -> StepPlan:
    return StepPlan(node_id="end", complete_output={"ok": True})


def _hold(run: Any, ctx: Any) -> StepPlan:
    from abstractruntime import Effect, EffectType

    return StepPlan(node_id="hold", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": "go"}, result_key="e"),
                    next_node="end")


def _local_registry() -> WorkflowRegistry:
    reg = WorkflowRegistry()
    reg.register(WorkflowSpec("quick", "end", {"end": _quick}))
    reg.register(WorkflowSpec("hold", "hold", {"hold": _hold, "end": _quick}))
    return reg


def _driver(prefix: str, **overrides: Any) -> Any:
    return build(make_settings(prefix, **overrides), _local_registry(), Recorder())


def _finished(driver: Any, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        rid = driver.start_run("quick", dispatch=False)
        driver.tick(rid)
        assert driver.load(rid).status == RunStatus.COMPLETED
        ids.append(rid)
    return ids


# --- on real workers ------------------------------------------------------------------------

def test_finished_runs_and_every_key_they_own_go_and_waiting_runs_stay(sr: Any, client: Any, prefix: str) -> None:
    driver = sr.scheduler.driver
    # finished: a timer then an event (completed), a parent and its child (both completed),
    # a parent whose child failed, a cancelled run
    evented, _ = sr.run(registry.get("timer-then-event"), vars={"delay": 0.2, "key": "k1"})
    sr.wait_for(evented, timeout=10, until=lambda r: r.status == RunStatus.WAITING and r.waiting.wait_key == "k1")
    assert sr.scheduler.resume_event(run_id=evented, wait_key="k1", payload={"v": 1}).status == RunStatus.COMPLETED
    parent, _ = sr.run(registry.get("parent"), vars={"child_delay": 0.2})
    done = sr.wait_for(parent, timeout=10, until=lambda r: r.status == RunStatus.COMPLETED)
    assert done.output["child"]["output"]["until"]
    children = [c.run_id for c in driver.run_store.list_children(parent_run_id=parent)]
    assert len(children) == 1
    failed_parent, _ = sr.run(registry.get("parent"), vars={"child": "broken"})
    sr.wait_for(failed_parent, timeout=10, until=lambda r: r.status == RunStatus.COMPLETED)
    failed_children = [c.run_id for c in driver.run_store.list_children(parent_run_id=failed_parent)]
    assert [driver.load(c).status for c in failed_children] == [RunStatus.FAILED]
    cancelled, _ = sr.run(registry.get("event"), vars={"key": "never"})
    assert sr.scheduler.cancel_run(cancelled).status == RunStatus.CANCELLED
    ended = [evented, parent, *children, failed_parent, *failed_children, cancelled]
    assert all(keys_naming(client, prefix, rid) for rid in ended)  # they were there
    # waiting: on an event (with an early event in its inbox for a later wait), on a far timer
    waiting, _ = sr.run(registry.get("event"), vars={"key": "w"})
    far, _ = sr.run(registry.get("timer"), vars={"delay": 3600})
    before = {rid: keys_naming(client, prefix, rid) for rid in (waiting, far)}
    assert all(f"{prefix}run:{rid}" in before[rid] for rid in before)

    sweeps = _sweep_until(driver, lambda: not any(keys_naming(client, prefix, rid) for rid in ended))

    assert sweeps >= 1
    for rid in (waiting, far):
        assert keys_naming(client, prefix, rid) == before[rid]
        assert driver.load(rid).status == RunStatus.WAITING
    # what is left: global keys, and the keys and index entries of the two waiting runs
    left = set(only_globals_left(client, prefix))
    assert left <= set(before[waiting]) | set(before[far])
    assert int(client.hget(f"{prefix}stats", "runs_expired")) == len(ended)
    # the waiting run still takes its event and finishes, and then goes too
    assert sr.scheduler.resume_event(run_id=waiting, wait_key="w", payload={}).status == RunStatus.COMPLETED
    _sweep_until(driver, lambda: not keys_naming(client, prefix, waiting))
    assert driver.load(far).status == RunStatus.WAITING


def test_a_parent_stays_while_a_child_remains_and_goes_after_it(sr: Any, client: Any, prefix: str) -> None:
    driver = sr.scheduler.driver
    parent, _ = sr.run(registry.get("parent"), vars={"child_delay": 3600})
    sr.wait_for(parent, timeout=10, until=lambda r: r.status == RunStatus.WAITING)
    [child] = [c.run_id for c in driver.run_store.list_children(parent_run_id=parent)]
    assert sr.scheduler.cancel_run(parent).status == RunStatus.CANCELLED  # the child runs on

    time.sleep(RETENTION_S + 0.1)  # the parent's time is up; its child still waits
    for _ in range(3):
        sweep(driver, force=True)
    assert driver.load(parent).status == RunStatus.CANCELLED
    assert driver.load(child).status == RunStatus.WAITING

    # the child ends after its parent; until its own time is up, both stay
    assert sr.scheduler.cancel_run(child).status == RunStatus.CANCELLED
    sweep(driver, force=True)
    assert driver.load(child).status == RunStatus.CANCELLED
    assert driver.load(parent).status == RunStatus.CANCELLED

    _sweep_until(driver, lambda: not keys_naming(client, prefix, child))
    _sweep_until(driver, lambda: not keys_naming(client, prefix, parent))
    assert only_globals_left(client, prefix) == []


# --- the sweep's bounds and settings (driven in-process, messages recorded) ------------------

def test_retention_0_keeps_every_ended_run(prefix: str, client: Any) -> None:
    driver = _driver(prefix, retention_s=0.0)
    ids = _finished(driver, 3)
    time.sleep(0.05)
    before = {rid: keys_naming(client, prefix, rid) for rid in ids}
    for _ in range(3):
        assert sweep(driver, force=True).expired == 0
    assert {rid: keys_naming(client, prefix, rid) for rid in ids} == before
    assert all(driver.load(rid).status == RunStatus.COMPLETED for rid in ids)


def test_a_sweep_deletes_at_most_its_batch_and_walks_on(prefix: str, client: Any, monkeypatch: Any) -> None:
    from abstractruntime_celery import retention

    monkeypatch.setattr(retention, "SCRIPT_BATCH", 2)  # a batch of 3 takes two script calls
    batch, n = 3, 8
    driver = _driver(prefix, retention_s=0.001, sweep_batch=batch)
    ids = _finished(driver, n)
    time.sleep(0.01)
    left, counts = set(ids), []
    for _ in range(-(-n // batch)):  # ceil(n / batch) sweeps
        report = sweep(driver, force=True)
        assert report.expired <= batch
        counts.append(report.expired)
        left = {rid for rid in left if keys_naming(client, prefix, rid)}
    assert left == set()
    assert counts == [3, 3, 2]
    assert only_globals_left(client, prefix) == []


def test_a_backlog_behind_runs_it_must_keep_is_reached(prefix: str, client: Any) -> None:
    """Leased ended runs at the front of the index do not hide the ones behind them."""
    batch = 2
    driver = _driver(prefix, retention_s=0.001, sweep_batch=batch)
    held = _finished(driver, 2)
    behind = _finished(driver, 3)
    leases = [driver.coord.leases.acquire(rid) for rid in held]
    assert all(leases)
    time.sleep(0.01)
    for _ in range(-(-(len(held) + len(behind)) // batch) + 1):
        sweep(driver, force=True)
    assert not any(keys_naming(client, prefix, rid) for rid in behind)
    assert all(driver.load(rid).status == RunStatus.COMPLETED for rid in held)  # under a lease: kept


# --- races: a run brought back is never lost --------------------------------------------------

def _bring_back(driver: Any, run_id: str) -> bool:
    """What a retry does to an ended run: compare-and-set it back to RUNNING."""
    run, version = driver.run_store.load_with_version(run_id)
    if run is None or run.status not in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED):
        return False
    run.status, run.output = RunStatus.RUNNING, None
    try:
        driver.run_store.save(run, expected_version=version)
    except VersionConflictError:
        return False  # deleted (or changed) in between: the retry is refused, nothing is lost
    return True


def test_a_run_brought_back_between_the_walk_and_the_delete_stays(prefix: str, client: Any) -> None:
    driver = _driver(prefix, retention_s=0.001)
    back, gone = _finished(driver, 2)
    time.sleep(0.01)
    keeper = RedisRetention(driver)
    found, _ = keeper.due((float("-inf"), ""), 10, 0.001)
    assert sorted(found) == sorted([back, gone])
    assert _bring_back(driver, back)  # a retry lands after the walk read it
    result = keeper.expire(found, 0.001)
    assert result.deleted == [gone] and result.kept == [back]
    assert driver.load(back).status == RunStatus.RUNNING
    assert f"{prefix}run:{back}" in owned_keys(client, prefix, back)
    assert client.zscore(f"{prefix}ended", back) is None


def test_a_stale_ended_entry_never_deletes_a_live_run(prefix: str, client: Any) -> None:
    """An entry left in the ended index by hand (or by a bug) for a run that is WAITING: the
    run stays, the entry goes."""
    driver = _driver(prefix, retention_s=0.001)
    live = driver.start_run("hold", dispatch=False)
    driver.tick(live)
    assert driver.load(live).status == RunStatus.WAITING
    client.zadd(f"{prefix}ended", {live: 1.0})
    report = sweep(driver, force=True)
    assert report.expired == 0
    assert driver.load(live).status == RunStatus.WAITING
    assert client.zscore(f"{prefix}ended", live) is None


def test_a_run_ended_again_later_counts_from_its_new_end(prefix: str, client: Any) -> None:
    driver = _driver(prefix, retention_s=3600.0)
    [rid] = _finished(driver, 1)
    client.zadd(f"{prefix}ended", {rid: 1.0})  # it first ended long ago
    keeper = RedisRetention(driver)
    assert _bring_back(driver, rid)
    run, version = driver.run_store.load_with_version(rid)
    run.status = RunStatus.COMPLETED  # ended again now (end times are Redis TIME, not updated_at)
    driver.run_store.save(run, expected_version=version)
    assert client.zscore(f"{prefix}ended", rid) > time.time() - 60
    assert keeper.expire([rid], 3600.0).kept == [rid]  # ended again a moment ago: not its time


def test_a_save_of_a_run_already_ended_keeps_its_end_time(prefix: str, client: Any) -> None:
    """Only the save that ends a run sets its end time: saving the ended run again (an
    operator's edit, a late write) does not keep it longer."""
    driver = _driver(prefix, retention_s=3600.0)
    [rid] = _finished(driver, 1)
    client.zadd(f"{prefix}ended", {rid: 1.0})  # it ended long ago
    run, version = driver.run_store.load_with_version(rid)
    run.updated_at = "2999-01-01T00:00:00+00:00"
    driver.run_store.save(run, expected_version=version)
    assert client.zscore(f"{prefix}ended", rid) == 1.0
    assert RedisRetention(driver).expire([rid], 3600.0).deleted == [rid]


def test_retries_racing_the_sweep_never_lose_a_live_run(prefix: str, client: Any) -> None:
    driver = _driver(prefix, retention_s=0.001, sweep_batch=7)
    ids = _finished(driver, 40)
    time.sleep(0.01)
    brought: list[str] = []
    stop = threading.Event()

    def retry_all() -> None:
        for rid in ids:
            if _bring_back(driver, rid):
                brought.append(rid)

    def sweeps() -> None:
        while not stop.is_set():
            sweep(driver, force=True)

    sweeper = threading.Thread(target=sweeps)
    sweeper.start()
    try:
        retry_all()
    finally:
        stop.set()
        sweeper.join(timeout=30)
    for _ in range(8):
        sweep(driver, force=True)
    for rid in ids:
        run = driver.run_store.load(rid)
        if rid in brought:
            assert run is not None and run.status == RunStatus.RUNNING, rid
        else:
            assert run is None and not keys_naming(client, prefix, rid), rid


def test_a_leased_ended_run_is_kept_until_its_lease_is_given_back(prefix: str, client: Any) -> None:
    driver = _driver(prefix, retention_s=0.001)
    [rid] = _finished(driver, 1)
    lease = driver.coord.leases.acquire(rid)
    assert lease is not None
    time.sleep(0.01)
    assert sweep(driver, force=True).expired == 0
    assert driver.load(rid).status == RunStatus.COMPLETED
    from abstractruntime_celery.context import TickContext

    driver.coord.leases.release(lease, TickContext(rid, fences={rid: lease.fence}, clears_notes=False))
    _sweep_until(driver, lambda: not keys_naming(client, prefix, rid))


# --- the other stores ----------------------------------------------------------------------

@pytest.mark.parametrize("store", ["memory", "file", "sqlite", "sqlite+redis"])
def test_the_other_stores_expire_ended_runs_in_batches_and_keep_the_rest(prefix: str, tmp_path: Any, client: Any,
                                                                         store: str) -> None:
    """In-process coordination, or (sqlite+redis) leases and notes in Redis."""
    url = {"memory": "memory://", "file": f"file://{tmp_path}/runs"}.get(store, f"sqlite:///{tmp_path}/runs.db")
    coord = STORE_URL if store.endswith("+redis") else ""
    driver = _driver(prefix, retention_s=0.001, sweep_batch=2, store_url=url, coord_url=coord)
    ended = _finished(driver, 3)
    live = driver.start_run("hold", dispatch=False)
    driver.tick(live)
    leased = _finished(driver, 1)[0]
    lease = driver.coord.leases.acquire(leased)
    driver.coord.marks.back_off(ended[0], time.time() + 3600)  # a note (Redis or in-process) goes too
    time.sleep(0.01)
    counts = [sweep(driver, force=True).expired for _ in range(3)]
    assert max(counts) <= 2 and sum(counts) == 3
    assert all(driver.run_store.load(rid) is None for rid in ended)
    assert driver.coord.marks.backoff_until(ended[0]) is None
    if coord:
        assert not any(keys_naming(client, prefix, rid) for rid in ended)
    assert all(driver.runtime.ledger_store.list(rid) == [] for rid in ended)
    assert driver.load(live).status == RunStatus.WAITING
    assert driver.load(leased).status == RunStatus.COMPLETED  # its lease is held
    from abstractruntime_celery.context import TickContext

    driver.coord.leases.release(lease, TickContext(leased, fences={leased: lease.fence}, clears_notes=False))
    _sweep_until(driver, lambda: driver.run_store.load(leased) is None)


def test_the_other_stores_begin_a_retention_walk_at_most_every_hundredth_of_retention(prefix: str,
                                                                                      tmp_path: Any) -> None:
    """They list every ended run to find the old ones: not each sweep (here every 10 s)."""
    driver = _driver(prefix, retention_s=1000.0, store_url=f"sqlite:///{tmp_path}/runs.db")

    def old_run() -> str:
        [rid] = _finished(driver, 1)
        run = driver.run_store.load(rid)
        run.updated_at = "2000-01-01T00:00:00+00:00"  # ended long ago
        driver.run_store.save(run)
        return rid

    first = old_run()
    report = sweep(driver, force=True)
    assert report.expired == 1 and driver.run_store.load(first) is None
    second = old_run()
    report = sweep(driver, force=True)  # within 10 s of the walk before: none begins
    assert "retention" not in report.read and report.expired == 0
    assert driver.run_store.load(second) is not None


def test_retention_s_is_seven_days_by_default_and_refuses_a_negative_or_endless_value() -> None:
    from abstractruntime_celery import Settings
    from abstractruntime_celery.config import load_settings
    from abstractruntime_celery.errors import ConfigError

    assert Settings().retention_s == 604800.0
    assert load_settings(env={"ABSTRACTRUNTIME_CELERY_RETENTION_S": "0"}).retention_s == 0.0
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="retention_s"):
            Settings(retention_s=bad)


@pytest.mark.parametrize("store", ["redis", "sqlite"])
def test_a_child_stays_while_its_parent_lives_and_goes_once_it_ended(prefix: str, tmp_path: Any, store: str) -> None:
    """A live parent (here waiting on an event, not on its child) may look its child up again
    by id: the child stays until the parent is gone or ended; then both go."""
    overrides: dict[str, Any] = {"retention_s": 0.001}
    if store == "sqlite":
        overrides["store_url"] = f"sqlite:///{tmp_path}/runs.db"
    driver = _driver(prefix, **overrides)
    parent = driver.start_run("hold", dispatch=False)
    driver.tick(parent)
    [child] = _finished(driver, 1)
    run = driver.run_store.load(child)
    run.parent_run_id = parent
    driver.run_store.save(run)
    time.sleep(0.01)
    for _ in range(2):
        sweep(driver, force=True)
    assert driver.load(child).status == RunStatus.COMPLETED and driver.load(parent).status == RunStatus.WAITING
    assert driver.control.cancel(parent).status == RunStatus.CANCELLED
    _sweep_until(driver, lambda: driver.run_store.load(child) is None and driver.run_store.load(parent) is None)
