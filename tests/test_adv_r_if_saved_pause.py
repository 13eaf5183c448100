"""What a tick committed is counted (and its "resumed" notice sent) if and only if its last
save landed. When that save was sent before the release (a read flushed it: a parent parked
on a child reads the child), ``lua/if_saved.lua`` decides at the release whether it "landed"
by comparing the run's stored ``updated`` with the one the tick wrote. A pause (or cancel)
that lands between that save and the release changes ``updated``: the tick's commit held,
yet its counters and its "resumed" notice were dropped. (The same tick whose last save is
still queued carries them in the save itself and counts them.) Fixed: a save no longer
queued and never refused has landed; ``if_saved.lua`` is then told so and does not check.

The window is opened from outside the package: the tick's Redis connection goes through a
TCP proxy that holds the release pipeline (it carries the EVALSHA of ``if_saved.lua``) on
the wire while the pause is made on a direct connection.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery import Settings, scripts
from abstractruntime_celery.driver import build
from tests import workflows_adv_f as af
from tests import workflows_adv_r as wf
from tests._adv_f import HoldProxy
from tests.conftest import STORE_URL

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def proxy() -> Iterator[HoldProxy]:
    url = redis.Redis.from_url(STORE_URL).connection_pool.connection_kwargs
    p = HoldProxy((url.get("host", "127.0.0.1"), int(url.get("port", 6379))))
    yield p
    p.close()


def _in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    return t, out


def test_a_pause_after_the_ticks_last_save_landed_leaves_its_counters(prefix: str, proxy: HoldProxy) -> None:
    settings = Settings(store_url=STORE_URL, key_prefix=prefix, queue=f"{prefix}q")
    direct = build(settings, wf.build_registry())
    proxied = build(Settings(store_url=proxy.url(10), key_prefix=prefix, queue=f"{prefix}q"), wf.build_registry())
    client = redis.Redis.from_url(STORE_URL)
    run_id = direct.start_run("ar-ev-spawn", dispatch=False)
    assert direct.tick(run_id).status == "waiting"
    direct.accept_event(run_id, "k", {"v": 1}, dispatch=False)
    before = int(client.hget(f"{prefix}stats", "runs_resumed") or 0)

    notices = client.pubsub(ignore_subscribe_messages=True)
    notices.subscribe(direct.coord.notices.channel)
    proxy.hold([scripts.register(client, "if_saved").sha])  # the release pipeline of the next tick
    tick, out = _in_thread(lambda: proxied.tick(run_id))
    assert proxy.held.wait(30), "the tick never sent its release"
    parked = direct.load(run_id)
    assert parked.status == RunStatus.WAITING and parked.current_node == "spawn"  # its save landed
    direct.control.pause(run_id)  # lands after the tick's save, before its release
    proxy.let_go()
    tick.join(30)
    assert out and out[0].changed, out

    heard: list[bytes] = []
    deadline = time.monotonic() + 2.0  # (the notice, if any, was published before the tick returned)
    while time.monotonic() < deadline:
        m = notices.get_message(timeout=0.2)
        if m is not None:
            heard.append(m["data"])
    notices.close()
    after = int(client.hget(f"{prefix}stats", "runs_resumed") or 0)
    assert after == before + 1, (before, after, client.hgetall(f"{prefix}stats"))  # (seen: not counted)
    assert any(b'"resumed"' in h and run_id.encode() in h for h in heard), heard  # (seen: none)


def test_a_pause_before_the_release_that_carries_the_ticks_last_save_refuses_its_counters(
        prefix: str, proxy: HoldProxy) -> None:
    """The other side: the tick's last save still queued (the run parks on an event: no read
    after it) rides the release pipeline with its counters and notice; a pause that lands
    before that pipeline refuses the save, and none of them happen."""
    direct = build(Settings(store_url=STORE_URL, key_prefix=prefix, queue=f"{prefix}q"), af.build_registry())
    proxied = build(Settings(store_url=proxy.url(10), key_prefix=prefix, queue=f"{prefix}q"), af.build_registry())
    client = redis.Redis.from_url(STORE_URL, decode_responses=True)
    run_id = direct.start_run("af-loop", vars={"n": 3}, dispatch=False)
    assert direct.tick(run_id).status == "waiting"
    direct.accept_event(run_id, "k", {"v": 1}, dispatch=False)
    before = client.hgetall(f"{prefix}stats")

    proxy.hold([direct.coord.leases._release.sha])  # the release pipeline (the last save rides it)
    tick, out = _in_thread(lambda: proxied.tick(run_id))
    assert proxy.held.wait(30), "the tick never sent its release"
    assert b"counts" in proxy.held_data  # (its counters ride the save, not if_saved.lua)
    direct.control.pause(run_id)
    proxy.let_go()
    tick.join(30)
    assert out and out[0].skipped == "controlled", out
    after = client.hgetall(f"{prefix}stats")
    for name in ("transitions", "runs_resumed"):
        assert after.get(name) == before.get(name), (name, before, after)

    direct.control.resume(run_id)
    assert direct.tick(run_id).status == "waiting"
    final = client.hgetall(f"{prefix}stats")
    assert int(final["events_applied"]) == 1, final  # (the apply's own save had landed before)
    assert direct.load(run_id).vars["got"] == [{"v": 1}]
