"""Many events, sent at once from many threads, to one run that waits on the same key again
and again, on real ``celery worker`` subprocesses; one worker is SIGKILLed in the middle.
Every accepted event must be applied exactly once (none lost, none twice, none stranded).
"""

from __future__ import annotations

import signal
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from tests import workflows_adv_f as wf
from devkit.cleanup import cleanup_broker
from devkit.procs import Cluster, wait_for
from tests.conftest import BROKER_URL, FX_URL, STORE_URL, _delete_prefix, make_settings

TIMEOUT = 90.0
EVENTS = 30

pytestmark = pytest.mark.timeout(240)


def make_app(settings: Any) -> Any:
    from abstractruntime_celery.app import make_app as _make_app
    from abstractruntime_celery.tasks import install

    app = _make_app(BROKER_URL, name=f"arc-{settings.queue}", config_module=None)
    install(app, registry=wf.registry, settings=settings)
    return app


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    prefix = f"af{uuid.uuid4().hex[:8]}:"
    # A SIGKILLed worker takes the messages it had prefetched with it: if one was the run's own
    # pending tick, the sweep sends another once its note is taken for lost (lost_tick_after_s,
    # 300 s by default; README, "What is guaranteed"), so a short one here.
    settings = make_settings(prefix, lease_ttl_s=3.0, orphan_grace_s=2.0, event_redeliver_s=1.0,
                             timer_horizon_s=5.0, lost_tick_after_s=10.0,
                             registry="tests.workflows_adv_f:registry")
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


def test_a_storm_of_events_to_a_run_looping_on_one_wait_key_is_applied_once_each_through_a_worker_kill(
        cluster: Cluster) -> None:
    doomed = cluster.worker("doomed", concurrency=2)
    cluster.worker("live", concurrency=2)
    cluster.beat()
    sr = create_scheduled_runtime(app=make_app(cluster.settings), settings=cluster.settings, registry=wf.registry,
                                  auto_start=False)
    fx = f"{cluster.settings.key_prefix}fx"
    run_id, state = sr.run(wf.registry.get("af-loop"), vars={"fx": fx, "n": EVENTS}, timeout=TIMEOUT)
    assert state.status == RunStatus.WAITING

    accepted: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        try:
            sr.resume_event(run_id=run_id, wait_key="k", payload={"i": i}, wait=False)
            with lock:
                accepted.append(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(EVENTS)]
    for n, t in enumerate(threads):
        t.start()
        if n == EVENTS // 2:
            wait_for(lambda: wf.fx_count(fx, run_id, "got") >= 1, TIMEOUT, "the first event applied", cluster)
            doomed.kill(signal.SIGKILL)
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(accepted) == list(range(EVENTS))

    done = sr.wait_for(run_id, timeout=TIMEOUT, until=lambda r: r.status == RunStatus.COMPLETED)
    got = [e["i"] for e in done.output["got"]]
    assert sorted(got) == list(range(EVENTS)), got
    assert wf.fx_count(fx, run_id, "got") >= EVENTS  # at least once each (a kill may re-run the node)
    assert redis.Redis.from_url(STORE_URL).hlen(f"{cluster.settings.key_prefix}inbox:{run_id}") == 0
