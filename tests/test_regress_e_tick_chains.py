"""Extra tick messages for a RUNNING run are absorbed (regression, branch regress-e).

Before: every tick of a RUNNING run sent a "continue" (while it still held the lease),
and a tick that found the lease busy made the holder send an "asked" too: two messages
in always became two out, so a looping run that got a few extra ticks or events kept
several tick chains alive and took that many turns of the queue from every other run
(one job took 22.8 s instead of 6.3 s beside it). Now a tick sends at most one message
for its own run, after its release (a "continue" and an "asked" merge): chains that
meet merge.

Counted, not timed: messages a tick sends (in-process, through a dispatcher that keeps
them), and each run's tick messages in the broker once the worker has stopped consuming
and finished what it had (each chain is then exactly one queued message).
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import redis

from abstractruntime_celery import create_scheduled_runtime
from devkit.cleanup import cleanup_broker, queue_len, unacked_for
from devkit.procs import Cluster, wait_for
from tests.conftest import BROKER_URL, FX_URL, STORE_URL, _delete_prefix, fx_count, make_app, make_settings
from tests.workflows_regress_e import registry

TICK_TASK = "abstractruntime.tick"

# --- adapters (the only lines that differ in the copy run against d599363) -----------------------


def _build(settings: Any, registry: Any, dispatcher: Any) -> Any:
    from abstractruntime_celery.driver import build

    return build(settings, registry, dispatcher, distributed=True)


# --- in-process: what one tick sends ------------------------------------------------------------------

class Messages:
    """A dispatcher that keeps the tick messages (nothing is delivered unless the test does)."""

    min_eta_s = 0.0

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None,
             message_id: Optional[str] = None) -> None:
        with self.lock:
            self.sent.append((run_id, reason))

    def tick(self, run_id: str, *, reason: str = "tick", eta: Any = None, event_id: Any = None) -> None:
        self.send(run_id, reason, eta)  # (the dispatcher method's name before the restructuring)

    def take(self, run_id: str) -> list[str]:
        with self.lock:
            mine = [reason for rid, reason in self.sent if rid == run_id]
            self.sent = [(rid, reason) for rid, reason in self.sent if rid != run_id]
        return mine


@pytest.fixture
def driver(prefix: str) -> Iterator[tuple[Any, Messages]]:
    messages = Messages()
    yield _build(make_settings(prefix, tick_max_steps=1), registry, messages), messages


def test_two_overlapping_ticks_of_a_running_run_send_one_message_for_it_not_two(
        driver: tuple[Any, Messages], fx: str) -> None:
    d, messages = driver
    run_id = d.start_run("forever", vars={"fx": fx, "sleep": 0.5}, dispatch=False)
    first = threading.Thread(target=lambda: d.tick(run_id, reason="tick"))
    first.start()
    wait_for(lambda: fx_count(fx, run_id, "loops") == 1, 30, "the first tick to run its node")
    second = d.tick(run_id, reason="extra")   # delivered while the first holds the lease
    assert second.skipped == "busy"
    first.join(30)
    assert fx_count(fx, run_id, "loops") == 1
    sent = messages.take(run_id)
    assert len(sent) == 1, f"two ticks in, {len(sent)} out: {sent}"


def test_many_overlapping_ticks_of_a_running_run_send_one_message_for_it(
        driver: tuple[Any, Messages], fx: str) -> None:
    d, messages = driver
    run_id = d.start_run("forever", vars={"fx": fx, "sleep": 0.5}, dispatch=False)
    first = threading.Thread(target=lambda: d.tick(run_id, reason="tick"))
    first.start()
    wait_for(lambda: fx_count(fx, run_id, "loops") == 1, 30, "the first tick to run its node")
    for _ in range(4):
        assert d.tick(run_id, reason="extra").skipped == "busy"
    first.join(30)
    sent = messages.take(run_id)
    assert len(sent) == 1, f"five ticks in, {len(sent)} out: {sent}"


def test_an_extra_tick_delivered_between_two_ticks_of_a_running_run_leaves_one_pending_tick(
        driver: tuple[Any, Messages], fx: str) -> None:
    d, messages = driver
    run_id = d.start_run("forever", vars={"fx": fx, "sleep": 0.0}, dispatch=False)
    d.tick(run_id, reason="start")            # the run's chain: it sends the next tick
    assert messages.take(run_id) == ["continue"]
    d.tick(run_id, reason="extra")            # an extra message, delivered while the lease is free
    # the chain's message is still pending (it was sent above); the extra one must not add another
    assert messages.take(run_id) == [], "a second pending tick (a second chain) for one run"


# --- real worker process: chains in the broker ------------------------------------------------------------

def _tick_messages(queue: str) -> dict[str, list[str]]:
    """Tick messages in the broker for ``queue`` (queued or unacknowledged), by run: their reasons."""
    client = redis.Redis.from_url(BROKER_URL)
    raw: list[bytes] = []
    for key in client.scan_iter(match=f"{queue}*"):
        if client.type(key) == b"list":
            raw += client.lrange(key, 0, -1)
    for _, value in client.hscan_iter("unacked"):
        try:
            message, _exchange, routing_key = json.loads(value)
        except (ValueError, TypeError):
            continue
        if routing_key == queue:
            raw.append(json.dumps(message).encode())
    by_run: dict[str, list[str]] = {}
    for item in raw:
        message = json.loads(item)
        if message.get("headers", {}).get("task") != TICK_TASK:
            continue
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        by_run.setdefault(str(args[0]), []).append(str(kwargs.get("reason", "tick")))
    return by_run


def _our_workers(c: Cluster, app: Any) -> list[str]:
    """Node names of this test's workers (remote control is broadcast: never address others')."""
    tag = c.settings.key_prefix.strip(":")
    nodes = [name for reply in app.control.ping(timeout=2) for name in reply if f".{tag}@" in name]
    assert nodes, "this test's worker does not answer"
    return nodes


def _stop_consuming_and_count(c: Cluster, app: Any) -> dict[str, list[str]]:
    """Tell the worker to stop consuming the queue, let it finish what it holds, then count:
    every chain still alive is then one queued message."""
    queue = c.settings.queue
    replies = app.control.cancel_consumer(queue, destination=_our_workers(c, app), reply=True, timeout=10)
    assert replies, "the worker did not answer cancel_consumer"
    client = redis.Redis.from_url(BROKER_URL)
    last: list[Any] = [None, 0]

    def quiet() -> bool:
        now = (queue_len(BROKER_URL, queue), len(unacked_for(client, [queue])))
        if now[1] == 0 and now == last[0]:
            last[1] += 1
        else:
            last[0], last[1] = now, 0
        return last[1] >= 10

    wait_for(quiet, 60, "the worker to finish the ticks it held", c, interval=0.1)
    return _tick_messages(queue)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """One ``celery worker`` process with two pool processes (prefork), no beat."""
    settings = make_settings(f"chn{uuid.uuid4().hex[:8]}:", registry="tests.workflows_regress_e:registry",
                             tick_max_steps=1, orphan_grace_s=3600.0, event_redeliver_s=3600.0)
    c = Cluster(settings, BROKER_URL, FX_URL, tmp_path)
    failed_before = request.session.testsfailed
    try:
        c.worker("w", concurrency=2)
        yield c
    finally:
        c.stop_all()
        if request.session.testsfailed > failed_before:
            c.dump_logs()
        cleanup_broker(BROKER_URL, settings.queue)
        _delete_prefix(STORE_URL, settings.key_prefix)
        redis.Redis.from_url(FX_URL).delete(f"{settings.key_prefix}fx")


def test_a_looping_run_given_extra_ticks_and_events_beside_others_comes_back_to_one_tick_chain(
        cluster: Cluster) -> None:
    """Five looping runs on two pool processes (the queue is never empty: a message a tick
    sends waits behind the others); one of them gets three extra ticks and two events."""
    c, settings = cluster, cluster.settings
    fx = f"{settings.key_prefix}fx"
    sr = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry, auto_start=False)
    app = sr.scheduler.app
    try:
        # runs that never end: one node per tick (tick_max_steps=1), each tick sends the next
        others = [sr.start(workflow=registry.get("forever"), vars={"fx": fx, "sleep": 0.02}) for _ in range(4)]
        run_id = sr.start(workflow=registry.get("forever"), vars={"fx": fx, "sleep": 0.02})
        wait_for(lambda: all(fx_count(fx, r, "loops") >= 5 for r in others + [run_id]), 60, "the runs to loop", c)
        for _ in range(3):
            app.send_task(TICK_TASK, args=[run_id], kwargs={"reason": "extra"}, queue=settings.queue)
        for i in range(2):
            sr.resume_event(run_id=run_id, wait_key="never", payload={"i": i}, wait=False)
        # chains merge when two of them are taken at once: give them up to four rounds of 100 loops
        rounds = []
        for _ in range(4):
            seen = fx_count(fx, run_id, "loops")
            wait_for(lambda: fx_count(fx, run_id, "loops") >= seen + 100, 180, "100 more loops", c)
            chains = _stop_consuming_and_count(c, app)
            rounds.append(len(chains.get(run_id, [])))
            if rounds[-1] == 1:
                break
            assert app.control.add_consumer(settings.queue, destination=_our_workers(c, app), reply=True,
                                            timeout=10)
        assert rounds[-1] == 1, f"tick chains of the run after each round of 100 loops: {rounds}"
        assert [len(chains.get(r, [])) for r in others] == [1, 1, 1, 1]
    finally:
        sr.stop()
