"""Found: the resume-latency histogram counted an event's application when the tick applied
it in memory (``tick.py: _apply_event``), and the observation rode the lease release whether
or not the tick's commit held. A tick whose apply was refused (a pause landed before its
save: the event stays in the inbox) still counted it; the tick that applied it later counted
it again: ``resume:count`` ended above ``events_applied`` for one event.

Fixed: with the Redis store the observation rides the save that applies the event
(``lua/save_run.lua`` option ``hist``, beside ``done``): counted only if that save lands.

The pause is made while the tick's save (the one that commits the event) is held on the
wire by a TCP proxy.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest
import redis

from abstractruntime_celery import Settings
from abstractruntime_celery.driver import build
from tests import workflows_adv_f as wf
from tests._adv_f import HoldProxy
from tests.conftest import STORE_URL

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def proxy() -> Iterator[HoldProxy]:
    kw = redis.Redis.from_url(STORE_URL).connection_pool.connection_kwargs
    p = HoldProxy((kw.get("host", "127.0.0.1"), int(kw.get("port", 6379))))
    yield p
    p.close()


def _in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    return t, out


def test_an_event_applied_once_is_one_resume_latency_observation(prefix: str, proxy: HoldProxy) -> None:
    direct = build(Settings(store_url=STORE_URL, key_prefix=prefix, queue=f"{prefix}q"), wf.build_registry())
    proxied = build(Settings(store_url=proxy.url(10), key_prefix=prefix, queue=f"{prefix}q"), wf.build_registry())
    client = redis.Redis.from_url(STORE_URL, decode_responses=True)
    run_id = direct.start_run("af-loop", vars={"n": 2}, dispatch=False)
    assert direct.tick(run_id).status == "waiting"
    direct.accept_event(run_id, "k", {"v": 1}, dispatch=False)

    save_sha = direct.run_store._save_script.sha
    proxy.hold([save_sha, b'"done"'])  # the save that commits the event
    tick, out = _in_thread(lambda: proxied.tick(run_id))
    assert proxy.held.wait(30), "the tick never sent the event's commit"
    direct.control.pause(run_id)  # lands first: the tick's save is refused, the event stays
    proxy.let_go()
    tick.join(30)
    assert out and out[0].skipped == "controlled", out

    direct.control.resume(run_id)
    assert direct.tick(run_id).status == "waiting"  # applies the event now, waits for the next
    assert direct.load(run_id).vars["got"] == [{"v": 1}]
    stats, hist = client.hgetall(f"{prefix}stats"), client.hgetall(direct.coord.keys.hist)
    assert int(stats.get("events_applied", 0)) == 1, stats
    assert int(hist.get("resume:count", 0)) == 1, hist  # (was 2: the refused apply counted too)
