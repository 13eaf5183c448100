"""Events still in the inbox when a tick ends its run are dropped (and reported) by that tick
at once, before the save that ends the run has gone out (it rides the lease release). When
that save is refused (a pause landed), the run did not end, yet its events are gone: the
inbox lost events no commit took. Resumed, the run runs its last node again; if that node
now decides otherwise (it looks at an outside fact), it waits for the event it no longer
has, for ever.

The window is opened from outside the package: the worker's Redis connection goes through
a TCP proxy that holds the tick's release pipeline (its final save) on the wire while an
operator pauses the run.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Iterator

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from tests import workflows_adv_f as wf
from tests._adv_f import HoldProxy, Side
from tests.conftest import FX_URL, REDIS, make_settings

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def proxy() -> Iterator[HoldProxy]:
    host, port = REDIS.split("//", 1)[1].split(":")
    p = HoldProxy((host, int(port)))
    yield p
    p.close()


@pytest.fixture
def n_key() -> Iterator[str]:
    key = f"af{uuid.uuid4().hex[:8]}:n"
    yield key
    redis.Redis.from_url(FX_URL).delete(key)


def test_events_left_when_a_tick_ends_its_run_stay_in_the_inbox_when_that_end_is_refused(
        prefix: str, fx: str, proxy: HoldProxy, n_key: str) -> None:
    settings = make_settings(prefix, lease_ttl_s=20.0)
    db = int(settings.store_url.rsplit("/", 1)[1])
    worker = build(replace(settings, store_url=proxy.url(db)), wf.build_registry(), distributed=True)
    ctl = build(settings, wf.build_registry(), distributed=True)
    fxr = redis.Redis.from_url(FX_URL)
    fxr.set(n_key, 2)  # the run needs two events ...

    run_id = ctl.start_run("af-loop-ext", vars={"fx": fx, "n_key": n_key}, dispatch=False)
    assert ctl.tick(run_id).status == "waiting"
    events = [ctl.accept_event(run_id, "k", {"v": v}, dispatch=False) for v in (1, 2, 3)]

    proxy.hold([b"EVALSHA", run_id.encode(), b'"status": "completed"'])  # the save that ends the run
    tick = Side(lambda: worker.tick(run_id))
    assert proxy.held.wait(30), "the run's completing save never reached the proxy"
    try:
        fxr.set(n_key, 3)  # ... and now three
        ctl.control.pause(run_id)
    finally:
        proxy.let_go()
    tick.result()

    paused = ctl.load(run_id)
    assert paused.status != RunStatus.COMPLETED  # the end was refused
    assert ctl.coord.inbox.has(run_id, events[2].event_id), "event 3 left the inbox though no commit took it"

    ctl.control.resume(run_id)
    for _ in range(3):
        ctl.tick(run_id)
    final = ctl.load(run_id)
    assert final.status == RunStatus.COMPLETED, (final.status, final.vars.get("got"))
    assert final.output == {"got": [{"v": 1}, {"v": 2}, {"v": 3}]}
