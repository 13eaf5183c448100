"""Adversarial: the ETA of a failing run's retry, against the timer horizon.

README: "No worker holds an ETA past the horizon, far below Redis ``visibility_timeout``
(1 h) and RabbitMQ ``consumer_timeout`` (30 min)." Timers obey it (``timers.plan``), but
the retry of a failing node is sent with ``eta = now + retry_delay`` (``Ticker._failed``),
which only ``retry_backoff_max_s`` bounds, and no setting check ties it to
``timer_horizon_s``: a worker holds that message as long as the backoff says (here 20 s
with a 5 s horizon; with ``retry_backoff_max_s=7200``, past the visibility timeout, and the
retry is delivered twice).

Real ``celery worker``: the held retry is read from kombu's ``unacked`` hash.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Iterator

import pytest
import redis

from abstractruntime_celery import create_scheduled_runtime
from tests._adv_g import adv_cluster, make_app
from devkit.procs import Cluster, wait_for
from tests.conftest import BROKER_URL, fx_count
from tests.workflows_adv_g import registry

HORIZON_S = 5.0
TIMEOUT = 60.0


def held_etas(queue: str) -> list[float]:
    """Seconds from now to the ETA of each message of ``queue`` a worker holds (unacked)."""
    out = []
    client = redis.Redis.from_url(BROKER_URL)
    for _, raw in client.hscan_iter("unacked"):
        try:
            message, _, routing_key = json.loads(raw)
            eta = message["headers"].get("eta")
        except (ValueError, KeyError, TypeError):
            continue
        if routing_key == queue and eta:
            out.append(datetime.fromisoformat(eta).timestamp() - time.time())
    return out


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with adv_cluster(tmp_path, request, timer_horizon_s=HORIZON_S, retry_backoff_s=20.0, retry_jitter=False,
                     lease_ttl_s=10.0, orphan_grace_s=600.0) as c:
        yield c


@pytest.mark.timeout(120)
def test_no_worker_holds_the_retry_of_a_failing_node_past_the_timer_horizon(cluster: Cluster) -> None:
    settings = cluster.settings
    fx = f"{settings.key_prefix}fx"
    cluster.worker("w", concurrency=1)
    sr = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry, auto_start=False)
    run_id, _ = sr.run(registry.get("flaky"), vars={"fx": fx, "fail_times": 1}, wait=False)
    wait_for(lambda: fx_count(fx, run_id, "tries") >= 1, TIMEOUT, "the node to fail once", cluster)
    etas = wait_for(lambda: held_etas(settings.queue), TIMEOUT, "the worker to hold the retry", cluster)
    assert max(etas) <= HORIZON_S + 1.0, (
        f"a worker holds a tick {max(etas):.1f}s ahead, timer_horizon_s={HORIZON_S:g}")
