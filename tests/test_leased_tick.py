"""What a tick does with fewer round trips, and why it stays safe: ledger appends
queued ahead of the next write, the control probe answered from the lease's own
read (with the save script as the guard), and a start that creates under the lease."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from abstractruntime import RunState, RunStatus, StepPlan, WorkflowSpec
from abstractruntime.core.models import StepRecord, StepStatus
from abstractruntime.scheduler.registry import WorkflowRegistry

from abstractruntime_celery.context import Fence, TickContext, entered
from abstractruntime_celery.driver import build
from abstractruntime_celery.errors import RunControlledError
from abstractruntime_celery.keys import Keys
from abstractruntime_celery.coord.redis import RedisLeases
from abstractruntime_celery.stores.redis.connection import connect
from abstractruntime_celery.stores.redis.ledger import RedisLedgerStore
from abstractruntime_celery.stores.redis.runs import RedisRunStore
from abstractruntime_celery.stores.redis.codec import control_of
from tests.conftest import STORE_URL, make_settings


def _record(run_id: str, key: str, status: StepStatus = StepStatus.COMPLETED) -> StepRecord:
    rec = StepRecord(run_id=run_id, step_id=f"s-{key}", node_id="n", status=status, idempotency_key=key)
    rec.result = {"key": key}
    return rec


@pytest.fixture
def stores(prefix: str) -> tuple[RedisRunStore, RedisLedgerStore, Any]:
    client = connect(STORE_URL)
    leases = RedisLeases(client, Keys(prefix), ttl_s=5.0)
    return RedisRunStore(client, prefix=prefix), RedisLedgerStore(client, prefix=prefix), leases


def _tick_of(run_id: str, lease: Any = None) -> TickContext:
    """A tick context for ``run_id`` (fenced by ``lease`` when given)."""
    return TickContext(run_id, fences={run_id: Fence(lease.key, lease.token)} if lease is not None else {})


def test_appends_in_a_tick_go_out_with_the_next_save_in_their_order(stores: Any) -> None:
    runs, ledger, _ = stores
    run = RunState.new(workflow_id="wf", entry_node="a", run_id="r-order")
    runs.save(run)
    ctx = _tick_of("another-run")
    with entered(ctx):
        ledger.append(_record(run.run_id, "k1"))
        ledger.append(_record(run.run_id, "k2"))
        assert ledger._r.llen(ledger.ledger_key(run.run_id)) == 0  # queued, not sent
        runs.save(run)  # carries them, first
        assert [r["idempotency_key"] for r in ledger.list(run.run_id)] == ["k1", "k2"]
        ledger.append(_record(run.run_id, "k3"))
        # a read in the tick sees the queued append (it rides the read's round trip)
        assert ledger.find_completed_result(run.run_id, "k3") == {"key": "k3"}
        assert ledger.count(run.run_id) == 3


def test_a_block_that_never_writes_again_still_sends_its_appends(stores: Any) -> None:
    _, ledger, _ = stores
    ctx = _tick_of("r-left")
    with entered(ctx):
        ledger.append(_record("r-left", "k1", StepStatus.STARTED))
    ctx.queue.flush()  # what the lease release does with what nobody took
    assert [r["step_id"] for r in ledger.list("r-left")] == ["s-k1"]


def test_a_save_a_pause_refuses_takes_the_records_it_commits_with_it(stores: Any) -> None:
    """The Runtime appends a step's records before the save that commits them; they go in
    one atomic step with it. A save refused because a pause landed takes them with it (a
    record of a step that never committed would show the step, or an event, twice once it
    runs again). A lost lease refuses both too: a stale writer writes nothing."""
    runs, ledger, leases = stores
    run = RunState.new(workflow_id="wf", entry_node="a", run_id="r-refused")
    runs.save(run)
    lease = leases.acquire(run.run_id)
    assert lease is not None
    with entered(_tick_of(run.run_id, lease)) as ctx:
        ctx.confirm(control_of(run))
        paused = RedisRunStore(connect(STORE_URL), prefix=runs.prefix).load(run.run_id)
        paused.vars.setdefault("_runtime", {}).setdefault("control", {})["paused"] = True
        thread = threading.Thread(target=lambda: RedisRunStore(connect(STORE_URL), prefix=runs.prefix).save(paused))
        thread.start()
        thread.join()
        ledger.append(_record(run.run_id, "k1"))
        runs.save(run)
        with pytest.raises(RunControlledError):
            ctx.queue.flush()
    assert ledger.count(run.run_id) == 0
    leases.client.set(lease.key, "someone-else")  # now the lease is lost
    with entered(_tick_of(run.run_id, lease)) as ctx:
        ledger.append(_record(run.run_id, "k2"))
        runs.save(run)
        with pytest.raises(Exception, match="Lease"):
            ctx.queue.flush()
    assert ledger.count(run.run_id) == 0


def test_a_fenced_save_refuses_to_overwrite_a_pause_that_landed_mid_tick(stores: Any) -> None:
    runs, _, leases = stores
    run = RunState.new(workflow_id="wf", entry_node="a", run_id="r-pause")
    runs.save(run)
    lease = leases.acquire(run.run_id)
    assert lease is not None
    with entered(_tick_of(run.run_id, lease)) as ctx:
        ctx.confirm(control_of(run))
        assert runs.probe_control(run.run_id) == ("running", False)  # from the lease's read

        def pause() -> None:  # another thread: no fence, no knowledge, like a control plane
            outside = RedisRunStore(connect(STORE_URL), prefix=runs.prefix)
            other = outside.load(run.run_id)
            other.vars.setdefault("_runtime", {}).setdefault("control", {})["paused"] = True
            outside.save(other)

        t = threading.Thread(target=pause)
        t.start()
        t.join()
        run.current_node = "b"
        runs.save(run)  # queued: it rides the tick's next round trip
        with pytest.raises(RunControlledError) as err:
            ctx.queue.flush()
        assert err.value.paused is True and err.value.status == "running"
    stored = RedisRunStore(connect(STORE_URL), prefix=runs.prefix).load(run.run_id)
    assert stored.current_node == "a" and control_of(stored) == ("running", True)
    leases.release(lease, TickContext(lease.run_id))


# --- through the driver ------------------------------------------------------------


def _cancel_from_outside(prefix: str, run_id: str) -> None:
    def cancel() -> None:
        outside = RedisRunStore(connect(STORE_URL), prefix=prefix)
        run = outside.load(run_id)
        run.status = RunStatus.CANCELLED
        outside.save(run)

    t = threading.Thread(target=cancel)  # its own context: no lease, no fence
    t.start()
    t.join()


def _cancelling_registry(prefix: str) -> WorkflowRegistry:
    def first(run: RunState, ctx: Any) -> StepPlan:
        _cancel_from_outside(prefix, run.run_id)  # a control plane cancels while the node runs
        return StepPlan(node_id="first", next_node="second")

    def second(run: RunState, ctx: Any) -> StepPlan:
        return StepPlan(node_id="second", complete_output={"reached": True})

    reg = WorkflowRegistry()
    reg.register(WorkflowSpec("cancelled_mid_tick", "first", {"first": first, "second": second}))
    return reg


@pytest.mark.parametrize("ttl", [0.25, 0.0], ids=["probe-from-lease", "probe-reads-redis"])
def test_a_cancel_that_lands_mid_tick_stands(prefix: str, ttl: float) -> None:
    driver = build(make_settings(prefix, control_ttl_s=ttl), _cancelling_registry(prefix))
    run_id = driver.start_run("cancelled_mid_tick", dispatch=False)
    outcome = driver.tick(run_id)
    run = driver.load(run_id)
    assert run.status == RunStatus.CANCELLED and run.current_node == "first" and not run.output
    assert outcome.status == "cancelled"
    # trusting the lease's read, the save is what notices; reading Redis, the probe does
    stats = driver.coord.stats.snapshot()
    assert stats.controlled == (1 if ttl else 0) and stats.tick_errors == 0  # not a failing node


def test_start_and_tick_creates_under_the_lease_in_few_round_trips(prefix: str) -> None:
    from bench.roundtrips import count_roundtrips

    reg = WorkflowRegistry()
    reg.register(WorkflowSpec("one", "only", {"only": lambda run, ctx: StepPlan(node_id="only",
                                                                                 complete_output={"ok": 1})}))
    driver = build(make_settings(prefix), reg)
    driver.start_and_tick("one", run_id="warm")  # scripts loaded, pools open
    with count_roundtrips() as rt:
        run_id, outcome = driver.start_and_tick("one", run_id="r-start")
    assert outcome.status == "completed" and driver.load(run_id).output == {"ok": 1}
    # lease + reads; create; records, save and release in one pipeline
    assert rt.total <= 3, rt.trips
    keys = [r.get("idempotency_key") for r in driver.runtime.ledger_store.list(run_id)]
    assert keys[0] == "system:completion:only"  # queued appends landed, in order
    # the same id again: the run is ticked (a duplicate), not created twice
    again, outcome = driver.start_and_tick("one", run_id="r-start")
    assert again == "r-start" and outcome.status == "completed"
    assert driver.coord.stats.snapshot().duplicates >= 1


def test_a_start_is_two_round_trips_and_no_node_runs_before_its_lease_and_create_land(prefix: str) -> None:
    """A start reserves its lease and queues its create; both go in the first round trip,
    before the first node runs (an id made up elsewhere may exist: a redelivered start)."""
    from bench.roundtrips import count_roundtrips

    reg = WorkflowRegistry()
    reg.register(WorkflowSpec("one", "only", {"only": lambda run, ctx: StepPlan(node_id="only",
                                                                                 complete_output={"ok": 1})}))
    driver = build(make_settings(prefix), reg)
    driver.start_and_tick("one")  # warm
    with count_roundtrips() as rt:
        run_id, outcome = driver.start_and_tick("one")
    assert outcome.status == "completed" and driver.load(run_id).output == {"ok": 1}
    names = [[n for n in names if n not in ("MULTI", "EXEC")] for _, names in rt.trips]
    # 1: acquire + create (before the node); 2: records, save, release, counters (each one MULTI)
    assert len(names) == 2 and names[0] == ["EVALSHA", "EVALSHA"], names
    assert not driver.coord.leases.is_held(run_id)
    assert [r.get("idempotency_key") for r in driver.runtime.ledger_store.list(run_id)][0] == "system:completion:only"


def test_a_start_for_an_id_that_exists_after_all_overwrites_nothing(prefix: str, fx: str) -> None:
    """A start whose id exists (a start message delivered twice, or a caller's id) runs
    no node before it knows: the queued create finds the run, drops the reserved lease
    (so nothing queued behind it lands), and the existing run is ticked as it is, after
    its identity is checked."""
    from abstractruntime import RunIdentityConflict  # type: ignore[attr-defined]
    from tests.conftest import fx_count

    from tests.workflows import registry

    driver = build(make_settings(prefix), registry)
    driver.start_run("steps", run_id="mine", vars={"n": 2, "fx": fx}, dispatch=False)  # RUNNING, never ticked
    before = driver.load("mine")
    records = driver.runtime.ledger_store.count("mine")
    with pytest.raises(RunIdentityConflict, match="mine"):
        driver.start_and_tick("steps", run_id="mine", vars={"n": 5, "fx": fx})
    after = driver.load("mine")
    assert after.vars == before.vars and after.status == before.status == RunStatus.RUNNING
    assert driver.runtime.ledger_store.count("mine") == records  # no node ran
    assert fx_count(fx, "mine", "step") == 0
    assert not driver.coord.leases.is_held("mine")
    # the same request again (a redelivered message) ticks the run the first one made
    _, outcome = driver.start_and_tick("steps", run_id="mine", vars={"n": 2, "fx": fx})
    assert outcome.status in ("running", "completed")


def test_start_and_tick_refuses_an_id_taken_by_another_workflow(prefix: str) -> None:
    from tests.workflows import registry

    driver = build(make_settings(prefix), registry)
    driver.start_and_tick("steps", run_id="taken", vars={"n": 2})
    with pytest.raises(ValueError, match="taken"):  # RunIdentityConflict where AbstractRuntime has it
        driver.start_and_tick("flaky", run_id="taken")
    assert driver.load("taken").workflow_id == "steps"


def test_a_save_refused_for_a_lost_lease_stops_the_tick_before_the_next_node(prefix: str, fx: str) -> None:
    """A tick's save rides its next round trip; the Runtime's next node must not run
    before it has landed: a refused save ends the tick there, as a failing save did."""
    from tests.conftest import fx_count
    from tests.workflows import bump

    def first(run: RunState, ctx: Any) -> StepPlan:
        bump(run, "first")
        client = connect(STORE_URL)
        t = threading.Thread(target=lambda: client.set(f"{prefix}lease:{run.run_id}", "thief"))
        t.start()
        t.join()  # another worker took the lease while this node ran
        return StepPlan(node_id="first", next_node="second")

    def second(run: RunState, ctx: Any) -> StepPlan:
        bump(run, "second")
        return StepPlan(node_id="second", complete_output={"done": True})

    reg = WorkflowRegistry()
    reg.register(WorkflowSpec("stolen", "first", {"first": first, "second": second}))
    driver = build(make_settings(prefix), reg)
    run_id = driver.start_run("stolen", vars={"fx": fx}, dispatch=False)
    outcome = driver.tick(run_id)
    assert outcome.skipped == "lease_lost"
    assert fx_count(fx, run_id, "first") == 1 and fx_count(fx, run_id, "second") == 0
    stored = driver.load(run_id)
    assert stored.current_node == "first" and stored.status == RunStatus.RUNNING  # node 1's save refused
    assert driver.coord.stats.snapshot().lease_lost == 1


def test_the_lease_keeper_leaves_a_reserved_lease_alone_until_its_acquire_is_sent(prefix: str) -> None:
    """A start's lease is reserved, its acquire queued; a long first node must not make the
    keeper report it lost (there is nothing in Redis to renew yet)."""
    from abstractruntime_celery.lease import LeaseKeeper

    leases = RedisLeases(connect(STORE_URL), Keys(prefix), ttl_s=0.3)
    keeper = LeaseKeeper(leases)
    ctx = TickContext("r-long")
    lease = leases.reserve(ctx, "r-long")
    keeper.hold(lease)
    time.sleep(0.35)  # the keeper ran at least once
    assert leases.renew(lease) is True and not leases.is_held("r-long")
    assert keeper.drop(lease) is False  # not seen lost
    ctx.queue.flush()  # the tick's first write sends the acquire
    assert leases.is_held("r-long")
    assert leases.renew(lease) is True and leases.release(lease, TickContext(lease.run_id)) is False
    assert not leases.is_held("r-long")
