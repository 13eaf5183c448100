"""Adversarial: a tick that waits in a backlog longer than the next-tick note lives gets
company: the sweep sends the run another tick, and another, one per note lifetime.

README ("What is guaranteed"): "Extra tick messages for a run are absorbed: a run has at
most one pending tick of its own (``{p}next:<id>`` names it), ticks asked for while it runs
merge into it, and the sweep sends none to a run that has one queued or a tick holding it,
so a backlog does not grow extra tick chains."

The note that says "one is queued" (``{p}next:<id>``, set by ``lua/tick_claim.lua`` and
``lua/lease_release.lua``) expires after ``4 x lease_ttl_s`` (``RedisLeases.note_ttl_s``),
whether or not its message was delivered: nothing ties it to the message's life in the
broker. A message that merely waits behind a backlog longer than that (two minutes with
the default 30 s lease) looks lost: the next orphan (or timer, event, parent) pass claims
the run again and sends another tick, and again after each further note lifetime. Each
of those messages runs a tick when it is delivered (the lease is free by then), so the
queue holds ``1 + backlog / note_ttl`` ticks per run, and the backlog they lengthen makes
more of them: once one round of the queue takes longer than the note lives, it grows
without bound (the runaway the note was added to stop, adv-g issue "tick chains").

Here the backlog is a queue nobody consumes for a few note lifetimes (``lease_ttl_s=1``:
the note lives 4 s); the sweep runs as beat would run it. The last test shows the runaway
with a real ``celery worker`` (one pool process) on looping runs whose queue round (8 runs x
0.8 s steps) is longer than the note lives: their queued ticks keep growing. At fault: coord/redis.py
``RedisLeases.note_ttl_s`` (a fixed 4 x lease_ttl_s) with sweep.py ``_send`` / ``Leases.claim``
taking an expired note for a lost message.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.sweep import sweep
from tests._adv_h import make_app
from tests._adv_g import adv_cluster
from devkit.cleanup import cleanup_broker
from devkit.procs import Cluster, wait_for
from tests.conftest import BROKER_URL, make_settings
from tests.test_adv_g_tick_chains import messages_per_run
from tests.workflows_adv_h import registry

RUNS = 3
LEASE_TTL_S = 1.0
NOTE_TTL_S = 4 * LEASE_TTL_S

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def sr(prefix: str) -> Iterator[Any]:
    settings = make_settings(prefix, lease_ttl_s=LEASE_TTL_S, orphan_grace_s=0.5, sweep_interval_s=1.0)
    runtime = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry,
                                       auto_start=False)
    yield runtime
    cleanup_broker(BROKER_URL, settings.queue)


def _backlogged(sr: Any, sweeps: int) -> dict[str, int]:
    """RUNS running runs, their ticks stuck in a queue nobody takes from; ``sweeps`` sweeps,
    one note lifetime apart. Returns tick messages queued per run."""
    driver = sr.driver
    ids = [driver.start_run("ag-loop", vars={"n": 1000, "sleep": 0.01}, dispatch=False) for _ in range(RUNS)]
    time.sleep(0.6)  # past orphan_grace_s: a RUNNING run no tick holds or was sent
    for i in range(sweeps):
        if i:
            time.sleep(NOTE_TTL_S + 0.5)
        sweep(driver, force=True)
    assert all(driver.load(r).status == RunStatus.RUNNING for r in ids)
    counts = messages_per_run(driver.settings.queue)
    return {r: counts[r] for r in ids}


def test_sweeps_within_a_note_lifetime_send_a_queued_run_no_second_tick(sr: Any) -> None:
    # Holds: three sweeps in a row, while the first tick is queued: one message per run.
    driver = sr.driver
    ids = [driver.start_run("ag-loop", vars={"n": 1000, "sleep": 0.01}, dispatch=False) for _ in range(RUNS)]
    time.sleep(0.6)
    for _ in range(3):
        sweep(driver, force=True)
    counts = messages_per_run(driver.settings.queue)
    assert [counts[r] for r in ids] == [1] * RUNS


def test_a_run_whose_tick_waits_in_a_backlog_longer_than_its_note_gets_no_second_tick(sr: Any) -> None:
    per_run = _backlogged(sr, sweeps=3)
    assert max(per_run.values()) <= 1, (
        f"one tick queued per run, the queue not taken from for {2 * (NOTE_TTL_S + 0.5):.0f}s "
        f"(note lifetime {NOTE_TTL_S:.0f}s): tick messages queued per run now {sorted(per_run.values())}")


@pytest.fixture
def cluster(tmp_path: Any, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with adv_cluster(tmp_path, request, registry="tests.workflows_adv_h:registry", tick_max_steps=1,
                     orphan_grace_s=1.0, sweep_interval_s=1.0, lease_ttl_s=LEASE_TTL_S) as c:
        yield c


@pytest.mark.timeout(240)
def test_looping_runs_whose_queue_round_outlasts_the_note_keep_at_most_two_ticks_queued(cluster: Cluster) -> None:
    settings = cluster.settings
    cluster.worker("w", concurrency=1)
    sr = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry, poll_interval_s=1.0)
    ids = [sr.run(registry.get("ag-loop"), vars={"n": 10000, "sleep": 0.8}, wait=False)[0] for _ in range(8)]
    worst, totals = 0, []
    try:
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            counts = messages_per_run(settings.queue)
            totals.append(sum(counts[r] for r in ids))
            worst = max([worst] + [counts[r] for r in ids])
            time.sleep(1.0)
    finally:
        sr.stop()
        for run_id in ids:
            sr.cancel_run(run_id)
    wait_for(lambda: all(sr.get_state(r).status == RunStatus.CANCELLED for r in ids), 60, "the cancels", cluster)
    assert worst <= 2, (f"8 looping runs, one tick each at first: up to {worst} ticks of one run queued at once; "
                        f"their ticks in the queue, second by second: {totals}")
