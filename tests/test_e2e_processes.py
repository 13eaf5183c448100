"""End to end on real ``celery -A abstractruntime_celery worker`` and ``beat`` subprocesses.

The subprocesses get their settings only from ``ABSTRACTRUNTIME_CELERY_*``
environment variables (devkit/procs.py); this process builds the same Settings
and talks to them through the broker and the shared Redis store, as a web app
would. Timings are short (sweep 1 s, lease TTL 3 s, orphan grace 2 s, event
redelivery 1 s) and every wait is a poll with a generous timeout.
"""

from __future__ import annotations

import os
import signal
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis
from abstractruntime import RunState, RunStatus, WaitReason

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.dispatch import RESUME_TASK, TICK_TASK
from abstractruntime_celery.timers import parse_until
from devkit.cleanup import cleanup_broker, flush_broker, queue_len, unacked_for
from devkit.procs import Cluster, wait_for
from tests.conftest import AMQP, BROKER_URL, FX_URL, STORE_URL, _delete_prefix, fx_count, make_app, make_settings
from tests.workflows import registry

TIMEOUT = 60.0

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest, broker_up: None) -> Iterator[Cluster]:
    """An empty cluster (start workers and beat on it) with its own prefix and queue;
    teardown kills every process group, dumps the logs if the test failed, and deletes
    the keys it made in the broker, store and side-effect DBs."""
    prefix = f"e2e{uuid.uuid4().hex[:8]}:"
    settings = make_settings(prefix, lease_ttl_s=3.0)
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


def runtime_for(c: Cluster) -> Any:
    """The caller side: a ScheduledRuntime on the same Settings, with no local sweep."""
    return create_scheduled_runtime(app=make_app(c.settings), settings=c.settings, registry=registry,
                                    auto_start=False)


def fx_of(c: Cluster) -> str:
    return f"{c.settings.key_prefix}fx"


def pool_children(pid: int) -> list[int]:
    """Pids of the prefork pool processes of the worker whose main process is ``pid``."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        children.extend(int(c) for c in text)
    assert children, f"worker {pid} has no pool processes"
    return children


def status_is(status: RunStatus) -> Callable[[RunState], bool]:
    return lambda run: run.status == status


def wait_drained(c: Cluster) -> None:
    """Every message of the cluster's queue was delivered and acked (tasks are acks_late:
    acked when the task returned), so every duplicate has been fully processed."""
    client = redis.Redis.from_url(BROKER_URL)
    wait_for(lambda: queue_len(BROKER_URL, c.settings.queue) == 0
             and not unacked_for(client, [c.settings.queue]), TIMEOUT, "the queue to drain", c)


def completions(ledger: list[dict[str, Any]]) -> dict[str, int]:
    """How many times each step (node, idempotency key) was recorded as completed in a run's
    ledger. AbstractRuntime records effect steps and the run's end (two ``system:`` records on
    the last node), not effect-free nodes, so those are counted through the fx counters."""
    out: dict[str, int] = {}
    for rec in ledger:
        if str(rec.get("status", "")).lower().endswith("completed"):
            step = f"{rec['node_id']}/{rec.get('idempotency_key') or rec.get('step_id')}"
            out[step] = out.get(step, 0) + 1
    return out


# 1. ------------------------------------------------------------------------------------------

@pytest.mark.broker
def test_worker_and_beat_drive_timers_events_and_children(cluster: Cluster) -> None:
    # A 2 s timer horizon: the 1.5 s timer gets a broker ETA at once, the 4 s one only when
    # beat's sweep finds it within the horizon.
    cluster.settings = replace(cluster.settings, timer_horizon_s=2.0)
    cluster.worker()
    cluster.beat()
    sr = runtime_for(cluster)
    fx = fx_of(cluster)

    timer_id, state = sr.run(registry.get("timer"), vars={"delay": 1.5, "fx": fx}, timeout=TIMEOUT)
    assert state.status == RunStatus.WAITING and state.waiting.reason == WaitReason.UNTIL
    far_id, state = sr.run(registry.get("timer"), vars={"delay": 4.0, "fx": fx}, timeout=TIMEOUT)
    assert state.status == RunStatus.WAITING

    event_id, state = sr.run(registry.get("event"), vars={"key": "go", "fx": fx}, timeout=TIMEOUT)
    assert state.status == RunStatus.WAITING and state.waiting.wait_key == "go"
    after = sr.scheduler.resume_event(run_id=event_id, wait_key="go", payload={"v": 7}, timeout=TIMEOUT)
    assert after.status == RunStatus.COMPLETED and after.output == {"event": {"v": 7}}

    ask_id, state = sr.run(registry.get("ask"), timeout=TIMEOUT)
    assert state.status == RunStatus.WAITING and state.waiting.reason == WaitReason.USER
    answered = sr.respond(ask_id, {"response": "yes"}, timeout=TIMEOUT)
    assert answered.status == RunStatus.COMPLETED and answered.output["answer"]

    parent_id, _ = sr.run(registry.get("parent"), vars={"child_delay": 1.0, "fx": fx}, wait=False)
    parent = sr.wait_for(parent_id, timeout=TIMEOUT, until=status_is(RunStatus.COMPLETED))
    child_id = parent.output["child"]["sub_run_id"]
    assert parent.output["child"]["output"]["until"]
    assert fx_count(fx, parent_id, "joined") == 1 and fx_count(fx, child_id, "done") == 1

    # Nobody ticked the timer run by hand: the worker's ETA message (or beat's sweep) did.
    woke = sr.wait_for(timer_id, timeout=TIMEOUT, until=status_is(RunStatus.COMPLETED))
    assert woke.output["woke_at"] >= parse_until(woke.vars["until"])  # never early
    assert fx_count(fx, timer_id, "done") == 1
    far = sr.wait_for(far_id, timeout=TIMEOUT, until=status_is(RunStatus.COMPLETED))
    assert far.output["woke_at"] >= parse_until(far.vars["until"])
    assert fx_count(fx, far_id, "done") == 1
    assert fx_count(fx, event_id, "done") == 1
    stats = sr.stats
    assert stats.sweeps >= 1 and stats.timers_armed >= 2  # beat ran the sweep, which armed the far timer
    assert not stats.errors, stats.errors


# 2. ------------------------------------------------------------------------------------------

def test_duplicate_messages_make_one_transition(cluster: Cluster) -> None:
    cluster.worker("a")
    cluster.worker("b")
    sr = runtime_for(cluster)
    app, fx, queue = sr.scheduler.app, fx_of(cluster), cluster.settings.queue

    # 2a. One tick message, published 20 times under one task id, to 4 pool processes.
    run_id = sr.driver.start_run("slow", vars={"sleep": 0.5, "fx": fx}, dispatch=False)
    before = sr.stats
    task_id = f"tick-{run_id}"
    for _ in range(20):
        app.send_task(TICK_TASK, args=[run_id], task_id=task_id, queue=queue)
    done = sr.wait_for(run_id, timeout=TIMEOUT, until=status_is(RunStatus.COMPLETED))
    wait_drained(cluster)
    after = sr.stats
    assert done.output == {"ok": True}
    assert (fx_count(fx, run_id, "work_started"), fx_count(fx, run_id, "work_done"),
            fx_count(fx, run_id, "finish")) == (1, 1, 1)
    counts = completions(sr.get_ledger(run_id))
    assert counts and all(n == 1 for n in counts.values()), counts
    assert after.transitions - before.transitions == 1
    skipped = (after.duplicates - before.duplicates) + (after.lease_busy - before.lease_busy)
    assert skipped >= 19, (after, before)

    # 2b. One event, its resume message delivered six times: applied once. "twice" waits on
    # the same key again right after, so a second application would fill "b".
    twice_id, state = sr.run(registry.get("twice"), timeout=TIMEOUT)
    assert state.status == RunStatus.WAITING and state.current_node == "first"
    handle = sr.scheduler.resume_event(run_id=twice_id, wait_key="k", payload={"n": 1}, wait=False)
    for _ in range(5):
        app.send_task(RESUME_TASK, args=[twice_id, handle.event.event_id], queue=queue)
    handle.wait(TIMEOUT)
    wait_drained(cluster)
    state = sr.get_state(twice_id)
    assert state.status == RunStatus.WAITING and state.current_node == "second", state
    assert state.vars.get("a") == {"n": 1} and "b" not in state.vars, state.vars
    assert not sr.driver.coord.inbox.pending(twice_id).events
    assert not sr.stats.errors, sr.stats.errors

    # 2c. An event sent while the run still sleeps on its timer is applied at the event wait.
    late_id, state = sr.run(registry.get("timer-then-event"), vars={"delay": 1.0, "key": "late", "fx": fx},
                            timeout=TIMEOUT)
    assert state.status == RunStatus.WAITING and state.waiting.reason == WaitReason.UNTIL
    sr.scheduler.resume_event(run_id=late_id, wait_key="late", payload={"v": 1}, wait=False)
    done = sr.wait_for(late_id, timeout=TIMEOUT, until=status_is(RunStatus.COMPLETED))
    assert done.output == {"event": {"v": 1}}
    assert fx_count(fx, late_id, "done") == 1


# 3. ------------------------------------------------------------------------------------------

@pytest.mark.broker
def test_killed_worker_run_is_recovered_by_the_sweep(cluster: Cluster) -> None:
    first = cluster.worker("doomed")
    cluster.beat()
    sr = runtime_for(cluster)
    fx = fx_of(cluster)

    run_id, _ = sr.run(registry.get("slow"), vars={"sleep": 3, "fx": fx}, wait=False)
    wait_for(lambda: fx_count(fx, run_id, "work_started") == 1, TIMEOUT, "the slow node to start", cluster)
    first.kill(signal.SIGKILL)  # the whole group: main process and prefork children
    first.popen.wait(10)
    # The tick message is still unacked in Redis (back only after visibility_timeout, 1 h):
    # only the sweep can bring the run back, once the lease expired and the grace passed.
    cluster.worker("rescuer")

    done = sr.wait_for(run_id, timeout=TIMEOUT, until=status_is(RunStatus.COMPLETED))
    assert done.output == {"ok": True}
    # What the design promises: the node that was running when its worker died is
    # at-least-once (it had no chance to commit, so it runs again: work_started >= 2, and
    # the killed attempt never reached work_done); every node after it, and the commit of
    # the killed node, happen exactly once.
    assert fx_count(fx, run_id, "work_started") >= 2
    assert fx_count(fx, run_id, "work_done") == 1
    assert fx_count(fx, run_id, "finish") == 1
    counts = completions(sr.get_ledger(run_id))
    assert all(n == 1 for n in counts.values()), counts
    if not AMQP:  # (RabbitMQ gives a dead consumer's unacked tick back at once: no orphan left)
        assert sr.stats.orphans_recovered >= 1

    # Now only the pool children die (the main process lives and forks new ones). With
    # acks_late + reject_on_worker_lost the tick message is back at once, but the dead
    # child's lease lives on until its TTL: that delivery is lease_busy, and the sweep
    # finishes the run once the lease expired.
    run_id, _ = sr.run(registry.get("slow"), vars={"sleep": 3, "fx": fx}, wait=False)
    wait_for(lambda: fx_count(fx, run_id, "work_started") == 1, TIMEOUT, "the slow node to start", cluster)
    rescuer = cluster.procs[-1]
    for child in pool_children(rescuer.pid):
        os.kill(child, signal.SIGKILL)
    done = sr.wait_for(run_id, timeout=TIMEOUT, until=status_is(RunStatus.COMPLETED))
    assert done.output == {"ok": True}
    assert fx_count(fx, run_id, "work_started") >= 2
    assert fx_count(fx, run_id, "work_done") == 1
    assert fx_count(fx, run_id, "finish") == 1
    assert rescuer.alive()


# 4. ------------------------------------------------------------------------------------------

def test_sweep_completes_every_run_after_the_broker_lost_all_messages(cluster: Cluster) -> None:
    first = cluster.worker("first")
    cluster.beat()
    sr = runtime_for(cluster)
    fx = fx_of(cluster)

    timer_ids = [sr.run(registry.get("timer"), vars={"delay": 3.0, "fx": fx}, wait=False)[0] for _ in range(10)]
    event_ids = [sr.run(registry.get("event"), vars={"key": "go", "fx": fx}, wait=False)[0] for _ in range(5)]
    parent_id, _ = sr.run(registry.get("parent"), vars={"child_delay": 3.0, "fx": fx}, wait=False)
    for run_id in timer_ids + event_ids + [parent_id]:
        state = sr.wait_for(run_id, timeout=TIMEOUT)
        assert state.status == RunStatus.WAITING, state

    # The worker dies holding the timers' ETA messages; three events are accepted (durable in
    # the inbox) while no worker runs; then every message of the queue is lost. The last two
    # events are sent once a new worker runs.
    first.kill(signal.SIGKILL)
    first.popen.wait(10)
    handles = [sr.scheduler.resume_event(run_id=r, wait_key="go", payload={"i": i}, wait=False)
               for i, r in enumerate(event_ids[:3])]
    # Two runs created meanwhile whose start message is lost too: RUNNING, no lease, no message.
    unsent = [sr.driver.start_run("timer", vars={"delay": 0.5, "fx": fx}, dispatch=False) for _ in range(2)]
    dropped = flush_broker(BROKER_URL, cluster.settings.queue)
    assert dropped >= 13  # 10 held ETA ticks + 3 resume messages (+ sweeps beat sent meanwhile)

    cluster.worker("second")
    handles += [sr.scheduler.resume_event(run_id=r, wait_key="go", payload={"i": i}, wait=False)
                for i, r in enumerate(event_ids) if i >= 3]
    for run_id in timer_ids + event_ids + unsent + [parent_id]:
        sr.wait_for(run_id, timeout=TIMEOUT, until=status_is(RunStatus.COMPLETED))
    for i, run_id in enumerate(event_ids):
        assert sr.get_state(run_id).output == {"event": {"i": i}}
        assert sr.driver.event_applied(handles[i].event)
    assert all(fx_count(fx, r, "done") == 1 for r in timer_ids + event_ids + unsent)
    assert fx_count(fx, parent_id, "joined") == 1


# 5. ------------------------------------------------------------------------------------------

def test_frozen_worker_cannot_commit_after_its_lease_expired(cluster: Cluster) -> None:
    frozen = cluster.worker("frozen")
    cluster.beat()
    sr = runtime_for(cluster)
    fx = fx_of(cluster)

    run_id, _ = sr.run(registry.get("slow"), vars={"sleep": 3, "fx": fx}, wait=False)
    wait_for(lambda: fx_count(fx, run_id, "work_started") == 1, TIMEOUT, "the slow node to start", cluster)
    frozen.kill(signal.SIGSTOP)  # a GC pause, a VM freeze: its lease keeper stops renewing
    try:
        cluster.worker("live")
        done = sr.wait_for(run_id, timeout=TIMEOUT, until=status_is(RunStatus.COMPLETED))
    finally:
        frozen.kill(signal.SIGCONT)
    # The frozen tick wakes up, finishes its node (work_done 2) and tries to go on: the
    # fence must refuse its save, so "finish" never runs twice and the result stands.
    wait_for(lambda: fx_count(fx, run_id, "work_done") == 2, TIMEOUT, "the frozen tick to wake up", cluster)
    wait_drained(cluster)
    after = sr.get_state(run_id)
    assert after.status == RunStatus.COMPLETED and after.updated_at == done.updated_at
    assert fx_count(fx, run_id, "finish") == 1
    counts = completions(sr.get_ledger(run_id))
    assert all(n == 1 for n in counts.values()), counts
    assert sr.stats.lease_lost >= 1


# 6. ------------------------------------------------------------------------------------------

@pytest.mark.broker
def test_plain_celery_worker_b_consumes_the_configured_queue(cluster: Cluster) -> None:
    """``celery -A abstractruntime_celery worker -B`` with no ``-Q``: the queue named in
    ABSTRACTRUNTIME_CELERY_QUEUE is the one it must consume (and its embedded beat sweeps)."""
    cluster.worker("plain", pass_queue=False, extra=["-B", "-s", str(cluster.tmp / "worker-beat-schedule")])
    sr = runtime_for(cluster)
    fx = fx_of(cluster)
    run_id, state = sr.run(registry.get("timer"), vars={"delay": 1.0, "fx": fx}, timeout=TIMEOUT)
    assert state.status == RunStatus.WAITING
    sr.wait_for(run_id, timeout=TIMEOUT, until=status_is(RunStatus.COMPLETED))
    assert fx_count(fx, run_id, "done") == 1
    wait_for(lambda: sr.stats.sweeps >= 1, TIMEOUT, "the embedded beat to sweep", cluster)
