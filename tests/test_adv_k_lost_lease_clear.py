"""Adversarial: on a store other than the shared Redis with Redis coordination (SQLite here),
the clear of a run's failure notes after a tick that moved it is
queued to the lease release (``marks.moved(run_id, ctx)`` -> ``ctx.queue.add_after``) and runs
there unconditionally, in the release's MULTI after ``lease_release.lua``, whether or not the
lease is still this tick's. A tick that
stalls past ``lease_ttl_s`` between its commit and its release (a GC pause, a frozen VM, a
starved keeper) has its lease taken by the next tick; if that tick's node fails, the stalled
tick's release then deletes the new failure's attempt count and backoff note. An early event
runs the failing node again at once, and the failure row lost its count: round J's late-clear
finding, still open where the docs say the notes "are cleared at once under the lease".

Sequence: ``ai-flaky-two``: ``a`` fails once (backoff); its retry T1 runs ``a`` (commits, with
``max_steps=1``); before T1 releases, its lease expires (deleted here, as its TTL would) and
T2 (the sweep's orphan tick, in another thread) takes it and runs ``b``, which fails: attempts
noted, backoff 60 s, retry sent. T1's release then clears the notes; an event tick runs ``b``
again at once.

At fault: tick.py ``Ticker._step`` (non-shared branch: ``self.coord.marks.moved(run.run_id,
ctx)``, queued behind the release) with coord/redis.py ``RedisLeases.release`` (the ``after``
writes run even when ``lease_release.lua`` says the lease was not ours, ``released == -1``).
(Held: the embedded in-memory coordination clears at once in ``_step``, before the stall;
the shared Redis store's clear rides ``if_saved.lua``, which the refused save makes a no-op.)

Deterministic, in-process: the hook runs T2 between T1's commit and its release.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from tests._dispatchers import Recorder
from tests.conftest import STORE_URL, fx_count, make_settings
from tests.workflows_adv_j import registry

pytestmark = pytest.mark.timeout(60)


def _expire_lease(driver: Any, run_id: str) -> None:
    leases = driver.coord.leases
    if getattr(leases, "client", None) is not None:
        leases.client.delete(driver.coord.keys.lease(run_id))
    else:
        with leases._lock:
            leases._leases.pop(run_id, None)


@pytest.mark.parametrize("kind", ["sqlite"])
def test_a_stalled_ticks_release_keeps_the_next_ticks_backoff(kind: str, prefix: str, tmp_path: Path) -> None:
    extra: dict[str, Any] = {"store_url": "memory://"} if kind == "memory" else \
        {"store_url": f"sqlite:///{tmp_path}/runs.db", "coord_url": STORE_URL}
    settings = make_settings(prefix, retry_backoff_s=30.0, retry_backoff_max_s=60.0, retry_jitter=False,
                             tick_max_attempts=5, **extra)
    rec = Recorder()
    driver = build(settings, registry, rec, distributed=kind != "memory")
    fx = f"{prefix}fx"
    run_id = driver.start_run("ai-flaky-two", vars={"fx": fx, "a_fails": 1, "b_fails": 100}, dispatch=False)
    with pytest.raises(RuntimeError, match="a is down"):
        driver.tick(run_id, reason="start", max_steps=1)
    driver.coord.marks.back_off(run_id, time.time() - 0.01)  # (a's backoff is over)
    original, errors = driver.ticker._count_commit, []

    def stall_then_release(ctx: Any, *args: Any, **kwargs: Any) -> Any:
        if ctx.run_id == run_id and not errors:  # T1 committed `a`; it stalls past its lease
            _expire_lease(driver, run_id)

            def t2() -> None:
                try:
                    driver.tick(run_id, reason="orphan")
                except RuntimeError as exc:
                    errors.append(str(exc))

            thread = threading.Thread(target=t2)
            thread.start()
            thread.join(30)
        return original(ctx, *args, **kwargs)

    driver.ticker._count_commit = stall_then_release
    retry = [m for m in rec.sent if m[0] == run_id and m[1] == "retry"][-1]
    driver.tick(run_id, reason="retry", message_id=retry[3], max_steps=1)  # T1 (T2 inside)
    driver.ticker._count_commit = original
    assert errors == ["b is down"] and fx_count(fx, run_id, "b") == 1  # T2 ran b, which failed
    driver.accept_event(run_id, "later", {"n": 1}, dispatch=False)
    try:
        driver.tick(run_id, reason="event")  # a tick within b's 60 s backoff
    except RuntimeError:
        pass
    runs_of_b = fx_count(fx, run_id, "b")
    assert runs_of_b == 1 and driver.load(run_id).status == RunStatus.RUNNING, (
        f"b failed and its retry is 60 s ahead, yet a tick ran it again at once ({runs_of_b} runs): the "
        f"stalled tick's release deleted its backoff note")
