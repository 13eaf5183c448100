"""RedisRunStore / RedisLedgerStore behaviour beyond the shared contract:
compare-and-set, fencing, prefixes, bad values, corrupt records, connections,
the ledger, and a real abstractruntime Runtime driving workflows on Redis."""

from __future__ import annotations

import logging
import multiprocessing
import socket
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict

import pytest
import redis
from abstractruntime import (
    Effect,
    EffectType,
    InMemoryLedgerStore,
    RunState,
    RunStatus,
    Runtime,
    StepPlan,
    WaitReason,
    WaitState,
    WorkflowRegistry,
    WorkflowSpec,
)
from abstractruntime.core.models import StepRecord, StepStatus

from abstractruntime_celery.context import Fence, TickContext, entered
from abstractruntime_celery.errors import (
    CorruptRunError,
    LeaseLostError,
    PayloadError,
    StoreUnavailableError,
    VersionConflictError,
)
from abstractruntime_celery.stores.redis.connection import connect
from abstractruntime_celery.stores.redis.ledger import RedisLedgerStore
from abstractruntime_celery.isotime import to_epoch as iso_to_epoch
from abstractruntime_celery.stores.redis.runs import RedisRunStore

from tests._redis_util import (  # noqa: F401  (fixtures)
    DB_SECOND,
    cas_increment_worker,
    delete_prefix,
    prefix,
    redis_client,
    redis_url,
    requires_redis,
    unique_prefix,
)

pytestmark = requires_redis


def new_run(run_id: str = "run-1", **kw: Any) -> RunState:
    run = RunState.new(workflow_id=kw.pop("workflow_id", "wf"), entry_node="start", run_id=run_id)
    for k, v in kw.items():
        setattr(run, k, v)
    return run


@pytest.fixture
def store(redis_client: redis.Redis, prefix: str) -> RedisRunStore:
    return RedisRunStore(redis_client, prefix=prefix)


@pytest.fixture
def ledger(redis_client: redis.Redis, prefix: str) -> RedisLedgerStore:
    return RedisLedgerStore(redis_client, prefix=prefix)


# --- compare-and-set ----------------------------------------------------------------


def test_versions_and_compare_and_set(store: RedisRunStore) -> None:
    run = new_run(vars={"n": 0})
    assert store.get_version(run.run_id) is None
    assert store.save(run) == 1
    assert store.save(run, expected_version=1) == 2
    run.vars["n"] = 99
    with pytest.raises(VersionConflictError) as err:
        store.save(run, expected_version=1)
    assert err.value.run_id == run.run_id and err.value.actual == 2
    assert store.load(run.run_id).vars["n"] == 0  # nothing written
    assert store.get_version(run.run_id) == 2
    assert store.load_with_version(run.run_id)[1] == 2


def test_expected_version_zero_means_absent(store: RedisRunStore) -> None:
    run = new_run("fresh")
    assert store.save(run, expected_version=0) == 1
    with pytest.raises(VersionConflictError):
        store.save(run, expected_version=0)


def test_cas_under_contention_loses_no_update(store: RedisRunStore, prefix: str) -> None:
    procs, per_proc = 8, 15
    run = new_run("contended", vars={"counter": 0})
    store.save(run)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(procs) as pool:
        results = pool.starmap(
            cas_increment_worker, [(redis_url(), prefix, run.run_id, per_proc)] * procs
        )
    total = sum(done for done, _ in results)
    assert total == procs * per_proc
    final = store.load(run.run_id)
    assert final.vars["counter"] == total
    assert store.get_version(run.run_id) == 1 + total


# --- fencing ---------------------------------------------------------------------------


def _fenced(prefix: str, token: str, run_id: str = "run-1") -> TickContext:
    """A context that holds (we believe) the lease of ``run_id`` with ``token``; its run is
    another one, so the saves below are sent at once rather than queued."""
    return TickContext("someone-else", fences={run_id: Fence(f"{prefix}lease:{run_id}", token)})


def test_fencing_refuses_a_stale_lease(redis_client: redis.Redis, prefix: str) -> None:
    lease_key = f"{prefix}lease:run-1"
    store = RedisRunStore(redis_client, prefix=prefix)
    run = new_run(vars={"v": 1})

    with entered(_fenced(prefix, "mine")), pytest.raises(LeaseLostError) as err:  # no lease at all
        store.save(run)
    assert err.value.run_id == "run-1"
    assert store.load("run-1") is None

    redis_client.set(lease_key, "mine", px=10_000)
    with entered(_fenced(prefix, "mine")):
        assert store.save(run) == 1

    redis_client.set(lease_key, "someone-else", px=10_000)  # our lease expired, another took it
    run.vars["v"] = 2
    with entered(_fenced(prefix, "mine")), pytest.raises(LeaseLostError):
        store.save(run)
    assert store.load("run-1").vars["v"] == 1 and store.get_version("run-1") == 1
    assert store.save(run) == 2  # outside a tick: no fence, no check


def test_a_tick_without_a_lease_on_the_run_saves_unchecked(redis_client: redis.Redis, prefix: str) -> None:
    store = RedisRunStore(redis_client, prefix=prefix)
    with entered(TickContext("another-run")):
        assert store.save(new_run()) == 1


def test_ledger_fencing(redis_client: redis.Redis, prefix: str) -> None:
    ledger = RedisLedgerStore(redis_client, prefix=prefix)
    rec = StepRecord(run_id="run-1", step_id="s1", node_id="n", status=StepStatus.STARTED)
    with entered(_fenced(prefix, "tok")) as ctx:
        ledger.append(rec)  # queued: it rides the next round trip
        with pytest.raises(LeaseLostError):
            ctx.queue.flush()
    assert ledger.list("run-1") == []
    redis_client.set(f"{prefix}lease:run-1", "tok", px=10_000)
    with entered(_fenced(prefix, "tok")) as ctx:
        ledger.append(rec)
        ctx.queue.flush()
    assert len(ledger.list("run-1")) == 1


# --- prefixes, time zones ---------------------------------------------------------------


def test_two_prefixes_never_see_each_other(redis_client: redis.Redis) -> None:
    p1, p2 = unique_prefix(), unique_prefix()
    try:
        a, b = RedisRunStore(redis_client, prefix=p1), RedisRunStore(redis_client, prefix=p2)
        la, lb = RedisLedgerStore(redis_client, prefix=p1), RedisLedgerStore(redis_client, prefix=p2)
        run = new_run("shared-id", status=RunStatus.WAITING,
                      waiting=WaitState(reason=WaitReason.UNTIL, until="2000-01-01T00:00:00+00:00"))
        a.save(run)
        la.append(StepRecord(run_id="shared-id", step_id="s", node_id="n", status=StepStatus.STARTED))
        assert b.load("shared-id") is None
        assert b.list_runs() == [] and b.list_due_wait_until(now_iso="2100-01-01T00:00:00+00:00") == []
        assert lb.list("shared-id") == []
        assert [r.run_id for r in a.list_runs()] == ["shared-id"]
    finally:
        delete_prefix(redis_client, p1)
        delete_prefix(redis_client, p2)


def test_until_offsets_are_compared_as_instants(store: RedisRunStore) -> None:
    # The same instant, 10:00 UTC, written three ways, plus 09:00 UTC written as 11:00+02:00.
    untils = {
        "z": "2030-01-01T10:00:00Z",
        "plus": "2030-01-01T12:00:00+02:00",
        "minus": "2030-01-01T05:00:00-05:00",
        "early": "2030-01-01T11:00:00+02:00",
        "late": "2030-01-01T10:00:00.000001+00:00",
    }
    for rid, until in untils.items():
        store.save(new_run(rid, status=RunStatus.WAITING, waiting=WaitState(reason=WaitReason.UNTIL, until=until)))

    def due(now: str) -> list:
        return [r.run_id for r in store.list_due_wait_until(now_iso=now)]

    assert due("2030-01-01T08:59:59Z") == []
    assert due("2030-01-01T09:00:00+00:00") == ["early"]
    assert due("2030-01-01T11:59:59.999999+02:00") == ["early"]
    assert sorted(due("2030-01-01T10:00:00Z")) == ["early", "minus", "plus", "z"]
    assert due("2030-01-01T10:00:00Z")[0] == "early"
    assert sorted(due("2030-01-01T06:00:00.000001-04:00")) == ["early", "late", "minus", "plus", "z"]
    assert store.next_wait_deadline() == "2030-01-01T11:00:00+02:00"
    assert iso_to_epoch("2030-01-01T10:00:00") == iso_to_epoch("2030-01-01T10:00:00Z")
    with pytest.raises(PayloadError):
        store.list_due_wait_until(now_iso="tomorrow")


def test_deadline_index_follows_the_wait(store: RedisRunStore, redis_client: redis.Redis) -> None:
    run = new_run(status=RunStatus.WAITING,
                  waiting=WaitState(reason=WaitReason.EVENT, wait_key="k", until="2001-01-01T00:00:00+00:00"))
    store.save(run)
    assert redis_client.zscore(store.due_key, run.run_id) == iso_to_epoch("2001-01-01T00:00:00Z")
    assert [r.run_id for r in store.list_due_wait_until(now_iso="2001-01-01T00:00:00Z")] == [run.run_id]
    run.status, run.waiting = RunStatus.RUNNING, None
    store.save(run)
    assert redis_client.zscore(store.due_key, run.run_id) is None
    assert store.list_event_waiters(wait_keys=["k"]) == []
    assert store.list_due_wait_until(now_iso="2100-01-01T00:00:00Z") == []
    assert store.delete(run.run_id) is True and store.delete(run.run_id) is False
    left = {k.decode() if isinstance(k, bytes) else k for k in redis_client.keys(f"{store.prefix}*")}
    assert left <= {store.keys.layout}, left  # no index entry left behind (the prefix's layout mark stays)


def test_delete_takes_the_runs_failure_notes_with_it(store: RedisRunStore, redis_client: redis.Redis) -> None:
    """A run made again under a deleted run's id must not inherit its failed attempts (nor its trace)."""
    run = new_run()
    store.save(run)
    notes = [store.keys.attempts(run.run_id), store.keys.unknown(run.run_id), store.keys.backoff(run.run_id),
             store.keys.trace(run.run_id)]
    for key in notes:
        redis_client.set(key, "1")
    assert store.delete(run.run_id) is True
    assert [k for k in notes if redis_client.exists(k)] == []


def test_probe_control(store: RedisRunStore) -> None:
    run = new_run(vars={"_runtime": {"control": {"paused": True}}})
    store.save(run)
    assert store.probe_control(run.run_id) == ("running", True)
    assert store.probe_control("missing") is None


# --- bad values and corrupt records ------------------------------------------------------


def test_non_json_value_is_a_payload_error(store: RedisRunStore) -> None:
    run = new_run("bad-vars", vars={"obj": object()})
    with pytest.raises(PayloadError, match="bad-vars"):
        store.save(run)
    assert store.load("bad-vars") is None


def test_oversized_record_is_a_payload_error(redis_client: redis.Redis, prefix: str) -> None:
    store = RedisRunStore(redis_client, prefix=prefix, max_record_bytes=2000)
    with pytest.raises(PayloadError, match="big-run.*max_record_bytes"):
        store.save(new_run("big-run", vars={"blob": "x" * 5000}))
    assert store.load("big-run") is None
    ledger = RedisLedgerStore(redis_client, prefix=prefix, max_record_bytes=2000)
    with pytest.raises(PayloadError, match="big-run"):
        ledger.append(StepRecord(run_id="big-run", step_id="s", node_id="n", status=StepStatus.COMPLETED,
                                 result={"blob": "x" * 5000}))
    with pytest.raises(PayloadError, match="big-run"):
        ledger.append(StepRecord(run_id="big-run", step_id="s", node_id="n", status=StepStatus.COMPLETED,
                                 result={"o": object()}))
    assert ledger.list("big-run") == []


def test_bad_until_is_a_payload_error(store: RedisRunStore) -> None:
    run = new_run("odd", status=RunStatus.WAITING, waiting=WaitState(reason=WaitReason.UNTIL, until="soon"))
    with pytest.raises(PayloadError, match="odd"):
        store.save(run)


@pytest.mark.parametrize("how", ["garbage-doc", "wrong-type", "not-a-runstate"])
def test_corrupt_record(store: RedisRunStore, redis_client: redis.Redis, how: str,
                        caplog: pytest.LogCaptureFixture) -> None:
    waiting = WaitState(reason=WaitReason.UNTIL, until="2001-01-01T00:00:00+00:00")
    good = new_run("good", status=RunStatus.WAITING, waiting=waiting)
    bad = new_run("bad", status=RunStatus.WAITING, waiting=waiting)
    store.save(good)
    store.save(bad)
    key = store.run_key("bad")
    if how == "garbage-doc":
        redis_client.hset(key, "doc", "{not json")
    elif how == "wrong-type":
        redis_client.delete(key)
        redis_client.set(key, "garbage")
    else:
        redis_client.hset(key, "doc", '{"status": "exploded"}')

    with pytest.raises(CorruptRunError) as err:
        store.load("bad")
    assert err.value.run_id == "bad"
    with caplog.at_level(logging.WARNING):
        assert [r.run_id for r in store.list_runs()] == ["good"]
        assert [r.run_id for r in store.list_due_wait_until(now_iso="2100-01-01T00:00:00Z")] == ["good"]
        assert [r.run_id for r in store.list_runs(status=RunStatus.WAITING)] == ["good"]
    assert "bad" in caplog.text
    # A full save replaces the garbage.
    store.save(bad)
    assert store.load("bad") == bad


# --- connections -------------------------------------------------------------------------


def test_unreachable_redis_names_host_and_port() -> None:
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 6399)) == 0:
            pytest.skip("something listens on 6399")
    store = RedisRunStore(connect("redis://127.0.0.1:6399/0"), prefix="x:")
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="Cannot reach Redis at 127.0.0.1:6399"):
        store.load("r")
    with pytest.raises(StoreUnavailableError):
        RedisLedgerStore(connect("redis://127.0.0.1:6399/0")).list("r")
    assert time.monotonic() - started < 5


def test_connect_pools_and_url_parts() -> None:
    a, b = connect(redis_url()), connect(redis_url())
    assert a.connection_pool is b.connection_pool
    assert connect(redis_url(DB_SECOND)).connection_pool is not a.connection_pool
    kw = connect("redis://alice:s3cret@db.example:6380/7").connection_pool.connection_kwargs
    assert (kw["username"], kw["password"], kw["host"], kw["port"], kw["db"]) == ("alice", "s3cret", "db.example", 6380, 7)
    tls = connect("rediss://db.example:6380/0").connection_pool
    assert issubclass(tls.connection_class, redis.SSLConnection)
    # Connecting is retried, a sent command never: tests/test_redis_conn.py.


def test_db_numbers_are_separate(prefix: str) -> None:
    s11 = RedisRunStore(connect(redis_url()), prefix=prefix)
    c12 = connect(redis_url(DB_SECOND))
    s12 = RedisRunStore(c12, prefix=prefix)
    try:
        s11.save(new_run("only-in-11"))
        assert s12.load("only-in-11") is None
    finally:
        delete_prefix(c12, prefix)


# --- ledger ------------------------------------------------------------------------------


def test_ledger_records_match_the_builtin_shape(ledger: RedisLedgerStore) -> None:
    ref = InMemoryLedgerStore()
    run = new_run()
    records = []
    for i in range(3):
        rec = StepRecord.start(run=run, node_id=f"n{i}", effect=None, idempotency_key=f"k{i}")
        records.append(rec)
        ledger.append(rec)
        ref.append(rec)
        rec.finish_success({"i": i})
        ledger.append(rec)
        ref.append(rec)
    got = ledger.list(run.run_id)
    assert got == ref.list(run.run_id)
    assert [r["status"] for r in got] == ["started", "completed"] * 3
    assert ledger.find_completed_result(run.run_id, "k1") == {"i": 1}
    assert ledger.find_completed_result(run.run_id, "nope") is None
    # first COMPLETED wins, like SQLite's ORDER BY seq ASC
    dup = StepRecord(run_id=run.run_id, step_id="x", node_id="n1", status=StepStatus.COMPLETED,
                     result={"i": "late"}, idempotency_key="k1")
    ledger.append(dup)
    assert ledger.find_completed_result(run.run_id, "k1") == {"i": 1}
    assert ledger.count(run.run_id) == 7
    assert ledger.count_many([run.run_id, "none"]) == {run.run_id: 7}
    assert ledger.last_record(run.run_id)["step_id"] == "x"
    page, cursor = ledger.list_after(run_id=run.run_id, after=5, limit=10)
    assert [r["status"] for r in page] == ["completed", "completed"] and cursor == 7
    assert ledger.delete(run.run_id) == 7
    assert ledger.list(run.run_id) == [] and ledger.find_completed_result(run.run_id, "k0") is None


def test_hash_chained_ledger(redis_client: redis.Redis, prefix: str) -> None:
    from abstractruntime import HashChainedLedgerStore

    chained = HashChainedLedgerStore(RedisLedgerStore(redis_client, prefix=prefix))
    run = new_run()
    for i in range(3):
        chained.append(StepRecord(run_id=run.run_id, step_id=f"s{i}", node_id="n", status=StepStatus.STARTED))
    recs = chained.list(run.run_id)
    assert recs[0]["prev_hash"] is None
    assert recs[1]["prev_hash"] == recs[0]["record_hash"] and recs[2]["prev_hash"] == recs[1]["record_hash"]


# --- a real Runtime on the Redis stores ---------------------------------------------------


def _soon(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


def build_registry() -> WorkflowRegistry:
    def done(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="done", complete_output={"vars": {k: v for k, v in run.vars.items() if not k.startswith("_")}})

    def sleep(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="sleep", effect=Effect(EffectType.WAIT_UNTIL, {"until": run.vars["until"]}), next_node="done")

    def wait_evt(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_EVENT, {"wait_key": run.vars["key"]}, result_key="got"),
                        next_node="done")

    def listen(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="listen", effect=Effect(EffectType.WAIT_EVENT, {"name": "ping", "scope": "global"},
                                                        result_key="got"), next_node="done")

    def emit(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="emit", effect=Effect(EffectType.EMIT_EVENT, {"name": "ping", "scope": "global",
                                                                             "payload": {"hello": 1}}, result_key="emitted"),
                        next_node="done")

    def child_step(run: RunState, ctx: Any) -> StepPlan:
        run.vars["child_ran"] = True
        return StepPlan(node_id="step", next_node="done")

    def parent(mode: Dict[str, Any]) -> Any:
        def start_child(run: RunState, ctx: Any) -> StepPlan:
            return StepPlan(node_id="start", effect=Effect(EffectType.START_SUBWORKFLOW,
                                                           {"workflow_id": "child", "vars": {"x": 1}, **mode},
                                                           result_key="sub"), next_node="done")
        return start_child

    reg = WorkflowRegistry()
    reg.register(WorkflowSpec("sleeper", "sleep", {"sleep": sleep, "done": done}))
    reg.register(WorkflowSpec("waiter", "wait", {"wait": wait_evt, "done": done}))
    reg.register(WorkflowSpec("listener", "listen", {"listen": listen, "done": done}))
    reg.register(WorkflowSpec("emitter", "emit", {"emit": emit, "done": done}))
    reg.register(WorkflowSpec("child", "step", {"step": child_step, "done": done}))
    reg.register(WorkflowSpec("parent_async", "start", {"start": parent({"async": True, "wait": True}), "done": done}))
    reg.register(WorkflowSpec("parent_sync", "start", {"start": parent({}), "done": done}))
    return reg


@pytest.fixture
def runtime(store: RedisRunStore, ledger: RedisLedgerStore) -> Runtime:
    return Runtime(run_store=store, ledger_store=ledger, workflow_registry=build_registry())


def test_runtime_wait_until(runtime: Runtime, store: RedisRunStore) -> None:
    wf = runtime.workflow_registry.get("sleeper")
    rid = runtime.start(workflow=wf, vars={"until": _soon(0.3)})
    assert runtime.tick(workflow=wf, run_id=rid).status == RunStatus.WAITING
    assert store.list_due_wait_until(now_iso=_soon(0)) == []
    assert [r.run_id for r in store.list_due_wait_until(now_iso=_soon(1))] == [rid]  # within the horizon
    time.sleep(0.35)
    assert [r.run_id for r in store.list_due_wait_until(now_iso=_soon(0))] == [rid]
    assert runtime.tick(workflow=wf, run_id=rid).status == RunStatus.COMPLETED
    assert store.list_due_wait_until(now_iso=_soon(10)) == []
    assert runtime.get_ledger(rid)  # the ledger was written through RedisLedgerStore


def test_runtime_wait_event_and_resume(runtime: Runtime, store: RedisRunStore) -> None:
    wf = runtime.workflow_registry.get("waiter")
    rid = runtime.start(workflow=wf, vars={"key": "order:42"})
    runtime.tick(workflow=wf, run_id=rid)
    assert [r.run_id for r in store.list_event_waiters(wait_keys=["order:42"])] == [rid]
    runtime.resume(workflow=wf, run_id=rid, wait_key="order:42", payload={"paid": True}, max_steps=0)
    assert store.list_event_waiters(wait_keys=["order:42"]) == []
    state = runtime.tick(workflow=wf, run_id=rid)
    assert state.status == RunStatus.COMPLETED and state.output["vars"]["got"] == {"paid": True}


def test_runtime_async_subworkflow(runtime: Runtime, store: RedisRunStore) -> None:
    reg = runtime.workflow_registry
    pwf, cwf = reg.get("parent_async"), reg.get("child")
    pid = runtime.start(workflow=pwf)
    parent = runtime.tick(workflow=pwf, run_id=pid)
    assert parent.status == RunStatus.WAITING and parent.waiting.reason == WaitReason.SUBWORKFLOW
    children = store.list_children(parent_run_id=pid)
    assert len(children) == 1 and children[0].status == RunStatus.RUNNING
    cid = children[0].run_id
    child = runtime.tick(workflow=cwf, run_id=cid)
    assert child.status == RunStatus.COMPLETED
    runtime.resume(workflow=pwf, run_id=pid, wait_key=f"subworkflow:{cid}",
                   payload={"sub_run_id": cid, "output": child.output}, max_steps=0)
    parent = runtime.tick(workflow=pwf, run_id=pid)
    assert parent.status == RunStatus.COMPLETED
    assert parent.output["vars"]["sub"]["output"]["vars"]["child_ran"] is True
    assert [r.run_id for r in store.list_children(parent_run_id=pid, status=RunStatus.COMPLETED)] == [cid]


def test_runtime_sync_subworkflow(runtime: Runtime, store: RedisRunStore) -> None:
    pwf = runtime.workflow_registry.get("parent_sync")
    pid = runtime.start(workflow=pwf)
    parent = runtime.tick(workflow=pwf, run_id=pid)
    assert parent.status == RunStatus.COMPLETED
    (child,) = store.list_children(parent_run_id=pid)
    assert child.status == RunStatus.COMPLETED and child.vars["child_ran"] is True


def test_runtime_emit_event_reaches_listener(runtime: Runtime, store: RedisRunStore) -> None:
    reg = runtime.workflow_registry
    lwf, ewf = reg.get("listener"), reg.get("emitter")
    lid = runtime.start(workflow=lwf)
    assert runtime.tick(workflow=lwf, run_id=lid).status == RunStatus.WAITING
    eid = runtime.start(workflow=ewf)
    emitter = runtime.tick(workflow=ewf, run_id=eid)
    assert emitter.status == RunStatus.COMPLETED
    assert emitter.output["vars"]["emitted"]["delivered_to"] == [lid]
    assert runtime.get_state(lid).status == RunStatus.RUNNING  # resumed, not ticked: the driver ticks it
    listener = runtime.tick(workflow=lwf, run_id=lid)
    assert listener.status == RunStatus.COMPLETED
    assert listener.output["vars"]["got"]["payload"] == {"hello": 1}


def test_runtime_start_with_explicit_id_is_idempotent(runtime: Runtime) -> None:
    wf = runtime.workflow_registry.get("waiter")
    a = runtime.start(workflow=wf, vars={"key": "k"}, run_id="fixed-id")
    b = runtime.start(workflow=wf, vars={"key": "k"}, run_id="fixed-id")
    assert a == b == "fixed-id"


def test_load_racing_a_create_sees_nothing_or_the_run_never_a_corrupt_record(store: RedisRunStore) -> None:
    """Regression: load did HGET doc then EXISTS; a create in between looked corrupt."""
    import threading

    ids = [f"race-{i}" for i in range(300)]
    seen: list[BaseException] = []

    def reader() -> None:
        for rid in ids:
            for _ in range(50):
                try:
                    if store.load(rid) is not None:
                        break
                except BaseException as exc:  # noqa: BLE001 - the failure under test
                    seen.append(exc)
                    return

    thread = threading.Thread(target=reader)
    thread.start()
    for rid in ids:
        store.save(new_run(rid))
    thread.join()
    assert seen == []
