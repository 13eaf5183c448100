"""Adversarial: extra tick messages of looping runs behind a backlog.

README: "Extra tick messages for a run are absorbed: a tick sends at most one message for
its own run, and ticks asked for while it runs merge into it." A run left RUNNING after
``tick_max_steps`` sends itself one "continue" tick. While that message waits in a queue
longer than ``orphan_grace_s``, the run has no lease and an old ``updated``: the orphan
pass takes it for the run of a dead worker and sends it another tick. Nothing merges the
two: each delivery that finds the lease free runs a tick and sends its own "continue", so
the run now has two chains of messages, then three at the next sweep, and so on for as
long as the backlog lasts (which the extra messages lengthen). Ticks only merge when two
of them overlap on two pool processes; on one they never do.

Real ``celery worker`` (prefork, one pool process), a sweep a second in this process; a few
looping runs of 0.3 s steps, one step per tick, so a round of the queue takes longer than
``orphan_grace_s`` (1 s). No worker dies. The queue is sampled: messages per run.
"""

from __future__ import annotations

import ast
import json
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from tests._adv_g import adv_cluster, make_app
from devkit.procs import Cluster, wait_for
from tests.conftest import BROKER_URL
from tests.workflows_adv_g import registry

RUNS = 6
OBSERVE_S = 20.0
TIMEOUT = 60.0


def messages_per_run(queue: str) -> Counter[str]:
    """Tick messages waiting in ``queue`` (kombu's Redis list), counted by run id."""
    client = redis.Redis.from_url(BROKER_URL)
    counts: Counter[str] = Counter()
    for raw in client.lrange(queue, 0, -1):
        try:
            headers = json.loads(raw)["headers"]
            if headers.get("task") == "abstractruntime.tick":
                counts[ast.literal_eval(headers["argsrepr"])[0]] += 1
        except (ValueError, KeyError, IndexError, TypeError, SyntaxError):
            continue
    return counts


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with adv_cluster(tmp_path, request, tick_max_steps=1, orphan_grace_s=1.0, sweep_interval_s=1.0,
                     lease_ttl_s=10.0) as c:
        yield c


@pytest.mark.timeout(180)
def test_a_looping_run_waiting_in_a_backlog_never_has_more_than_two_ticks_queued(cluster: Cluster) -> None:
    settings = cluster.settings
    cluster.worker("w", concurrency=1)
    # The sweep runs here, every second (Scheduler.start's loop, as in a web process): the
    # sweep messages beat sends would wait in the same backlog (see test_adv_g_sweep_backlog.py).
    sr = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry, poll_interval_s=1.0)
    ids = [sr.run(registry.get("ag-loop"), vars={"n": 1000, "sleep": 0.3}, wait=False)[0] for _ in range(RUNS)]
    worst: Counter[str] = Counter()
    samples = []
    try:
        deadline = time.monotonic() + OBSERVE_S
        while time.monotonic() < deadline:
            counts = messages_per_run(settings.queue)
            samples.append(sum(counts[r] for r in ids))
            for run_id in ids:
                worst[run_id] = max(worst[run_id], counts[run_id])
            time.sleep(0.5)
        stats = sr.stats
    finally:
        sr.stop()
        for run_id in ids:  # the chains end with the runs
            sr.cancel_run(run_id)
    wait_for(lambda: all(sr.get_state(r).status == RunStatus.CANCELLED for r in ids), TIMEOUT, "the cancels", cluster)
    assert max(worst.values()) <= 2, (
        f"{RUNS} looping runs, no worker died: up to {max(worst.values())} tick messages of one run queued at "
        f"once (per run: {sorted(worst.values())}); messages of these runs in the queue over time: {samples}; "
        f"orphans_recovered={stats.orphans_recovered}")
