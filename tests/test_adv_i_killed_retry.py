"""Adversarial: a worker SIGKILLed while it holds a failing node's retry (an ETA message)
strands the run for ``lost_tick_after_s`` (10 minutes by default), not ``orphan_grace_s``.

README: "A killed worker's run is recovered by the sweep once its lease expires and it has
been idle ``orphan_grace_s`` (Redis alone would redeliver only after ``visibility_timeout``)."
Since c82cbc2 the retry of a failing node is the run's own next tick (tick.py
``Ticker._failed`` sets ``want_more``/``retry_eta``; ``Ticker._follow_up`` sends it with the
run's ``next_id``), so it is noted in ``{p}next:<id>``, and that note now lives
``lost_tick_after_s`` (config.py, ``coord/redis.py`` ``RedisLeases.note_ttl_s``). A worker
holds ETA messages in memory, unacked; SIGKILLed, Redis gives them back only after
``visibility_timeout`` (1 h). Meanwhile the sweep's orphan pass finds the RUNNING run idle,
with no lease, but ``lua/tick_claim.lua`` refuses it a tick because the note is still set: no
tick reaches the run until the note expires. (Before c82cbc2 the retry was not noted and
the orphan pass recovered the run after ``orphan_grace_s``; timers held the same way are
woken by the due pass, ``tests/test_adv_g_timers_held.py``.)

Real ``celery worker`` (prefork) and ``beat`` subprocesses. At fault: tick.py
``Ticker._failed`` / ``_follow_up`` (a retry far ahead is noted like an immediate tick), with
``lost_tick_after_s`` as the note's life (``lua/lease_release.lua``, ``coord/redis.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from devkit.cleanup import unacked_for
from devkit.procs import Cluster, wait_for
from tests._adv_g import adv_cluster
from tests.conftest import BROKER_URL, fx_count
from tests.workflows_adv_i import registry

TIMEOUT = 60.0
REGISTRY = "tests.workflows_adv_i:registry"


def make_app(settings: object):  # type: ignore[no-untyped-def]
    from abstractruntime_celery.app import make_app as _make_app
    from abstractruntime_celery.tasks import install

    app = _make_app(BROKER_URL, name=f"arc-{settings.queue}", config_module=None)  # type: ignore[attr-defined]
    install(app, registry=registry, settings=settings)  # type: ignore[arg-type]
    return app


@pytest.fixture(params=[None], ids=["default-note-life"])
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    extra = request.param or {}
    with adv_cluster(tmp_path, request, registry=REGISTRY, lease_ttl_s=3.0, orphan_grace_s=2.0,
                     retry_backoff_s=8.0, retry_jitter=False, tick_max_attempts=5, **extra) as c:
        yield c


@pytest.mark.timeout(180)
def test_a_retry_held_by_a_sigkilled_worker_is_recovered_after_orphan_grace(cluster: Cluster) -> None:
    _kill_holding_the_retry_and_wait(cluster, 45.0)


@pytest.mark.parametrize("cluster", [dict(timer_horizon_s=5.0, lost_tick_after_s=12.0)], indirect=True,
                         ids=["short-note-life"])
@pytest.mark.timeout(180)
def test_held_with_a_short_lost_tick_after_s_the_sweep_recovers_it_once_the_note_expires(cluster: Cluster) -> None:
    """Held: the note expires after lost_tick_after_s, then the orphan pass ticks the run."""
    _kill_holding_the_retry_and_wait(cluster, 45.0)


def _kill_holding_the_retry_and_wait(cluster: Cluster, within: float) -> None:
    settings = cluster.settings
    fx = f"{settings.key_prefix}fx"
    w1 = cluster.worker("w1", concurrency=1)
    sr = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry, auto_start=False)
    run_id = sr.start(workflow=registry.get("ai-fail-then-wait"), vars={"fx": fx, "fail_times": 1})
    broker = redis.Redis.from_url(BROKER_URL)
    wait_for(lambda: fx_count(fx, run_id, "tries") == 1, TIMEOUT, "the node's first (failing) try", cluster)
    # w1 took the retry (ETA 8 s ahead) and holds it unacked.
    wait_for(lambda: len(unacked_for(broker, [settings.queue])) >= 1, TIMEOUT, "w1 to hold the retry", cluster)
    w1.kill()  # SIGKILL: the held retry stays unacked for visibility_timeout (1 h)
    cluster.worker("w2", concurrency=1)
    cluster.beat()
    # Lease gone after 3 s, idle 2 s, retry due after 8 s: a sweep should tick it well within 45 s
    # (the note lives lost_tick_after_s = 600 s).
    try:
        state = sr.wait_for(run_id, timeout=within, until=lambda r: r.status != RunStatus.RUNNING)
    except Exception as exc:  # RunWaitTimeout
        note = redis.Redis.from_url(settings.store_url).pttl(f"{settings.key_prefix}next:{run_id}")
        raise AssertionError(f"run still RUNNING {within:.0f} s after its worker died ({type(exc).__name__}); tries="
                             f"{fx_count(fx, run_id, 'tries')}, its next-tick note lives {note} ms more") from None
    assert state.status == RunStatus.WAITING and fx_count(fx, run_id, "tries") == 2
