"""Adversarial: on the shared Redis store the failure notes are cleared with the commit
(``lua/if_saved.lua``) only if the lease's *read* saw one (``ctx.clear_marks = ctx.marked``).
A note written after that read, while the tick runs, survives the tick's commit though the
commit moved the run after that failure.

Who writes one then: a tick that lost its lease. T0 runs node ``a``, frozen past
``lease_ttl_s`` (one long call holding the GIL); the sweep's orphan tick T1 takes the lease,
reads the run (no notes yet) and runs ``a`` again. Meanwhile T0's call ends with an error:
``_failed`` notes attempt 1 and a backoff of ``retry_backoff_s``. T1 then commits ``a``
(the run moved on, to wait for event ``go``), and its commit does not touch the notes. The
event comes: its tick is held back as "backoff" (round J: a WAITING run backs off too) until
T0's backoff ends, 30 s here (up to ``retry_backoff_max_s``), for a healthy run; and the
attempt stays counted against the next failure.

With the SQLite store (non-shared) ``marks.moved`` runs whatever the read saw: held there
(second test).

At fault: tick.py ``Ticker._step`` (``ctx.clear_marks = ctx.marked``: decided from the lease's
read) and ``Ticker._failed`` (a tick whose lease is lost still writes the notes).

Deterministic, in-process: gates order T0 and T1 as above (T1 reads with its lease while T0 is in
``a``; in one process T1 then waits for AbstractRuntime's per-run lock until T0's call fails).
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import pytest
from abstractruntime import RunStatus

import tests.workflows_adv_l as wf
from abstractruntime_celery.driver import build
from tests.conftest import STORE_URL, fx_count, make_settings
from tests.workflows_adv_l import registry

pytestmark = pytest.mark.timeout(60)


class Recorder:
    min_eta_s = 0.0

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None,
             message_id: Optional[str] = None) -> None:
        pass


def _scenario(kind: str, prefix: str, tmp_path: Path) -> tuple[Any, str, str, Any]:
    extra: dict[str, Any] = {} if kind == "redis" else \
        {"store_url": f"sqlite:///{tmp_path}/runs.db", "coord_url": STORE_URL}
    settings = make_settings(prefix, retry_backoff_s=30.0, retry_backoff_max_s=60.0, retry_jitter=False,
                             tick_max_attempts=5, **extra)
    driver = build(settings, registry, Recorder(), distributed=True)
    fx = f"{prefix}fx"
    run_id = driver.start_run("al-gated", vars={"fx": fx}, dispatch=False)
    in_a, t0_go, t0_errors = threading.Event(), threading.Event(), []

    def hook(run: Any) -> None:
        if fx_count(fx, run.run_id, "a") == 1:  # T0: frozen, then its call fails
            in_a.set()
            t0_go.wait(30)
            raise RuntimeError("a's call timed out")

    def t0() -> None:
        try:
            driver.tick(run_id, reason="start")
        except RuntimeError as exc:
            t0_errors.append(str(exc))

    original, begin = driver.ticker._count_commit, driver.ticker._begin
    t1_read = threading.Event()

    def t1_begin(*args: Any, **kwargs: Any) -> Any:
        got = begin(*args, **kwargs)  # T1's lease and its read (no notes yet)
        t1_read.set()
        return got

    def t1_commit(ctx: Any, *args: Any, **kwargs: Any) -> Any:
        thread.join(30)  # T1 ran a; T0's failure is noted before T1's commit lands
        return original(ctx, *args, **kwargs)

    t1_out: list[Any] = []
    wf.HOOK = hook
    try:
        thread = threading.Thread(target=t0)
        thread.start()
        assert in_a.wait(30)
        driver.coord.client.delete(driver.coord.keys.lease(run_id))  # T0's lease expires (its TTL)
        driver.ticker._count_commit, driver.ticker._begin = t1_commit, t1_begin
        t1 = threading.Thread(target=lambda: t1_out.append(driver.tick(run_id, reason="orphan")))
        t1.start()  # T1: the sweep's orphan tick
        assert t1_read.wait(30)
        # (in one process T1 now waits for AbstractRuntime's per-run lock, which T0's node holds)
        t0_go.set()  # T0's call fails now
        t1.join(30)
        driver.ticker._count_commit, driver.ticker._begin = original, begin
    finally:
        wf.HOOK = None
        t0_go.set()
        thread.join(30)
    out = t1_out[0]
    assert t0_errors == ["a's call timed out"] and out.changed and out.status == "waiting"
    return driver, run_id, fx, driver.coord.client.mget(driver.coord.keys.attempts(run_id),
                                                       driver.coord.keys.backoff(run_id))


def test_a_failure_noted_during_a_tick_does_not_hold_back_the_run_it_moved(prefix: str, tmp_path: Path) -> None:
    driver, run_id, fx, notes = _scenario("redis", prefix, tmp_path)
    driver.accept_event(run_id, "go", {"n": 1}, dispatch=False)
    out = driver.tick(run_id, reason="event")
    run = driver.load(run_id)
    assert run.status == RunStatus.COMPLETED, (
        f"T1 moved the run to its wait after T0's failure was noted; the event's tick was {out.skipped!r} and the "
        f"run is {run.status.value} (notes left by T1's commit: attempts, backoff = {notes})")


def test_held_with_the_sqlite_store_the_moving_tick_clears_them(prefix: str, tmp_path: Path) -> None:
    driver, run_id, fx, notes = _scenario("sqlite", prefix, tmp_path)
    assert notes == [None, None]
    driver.accept_event(run_id, "go", {"n": 1}, dispatch=False)
    driver.tick(run_id, reason="event")
    assert driver.load(run_id).status == RunStatus.COMPLETED and fx_count(fx, run_id, "done") == 1
