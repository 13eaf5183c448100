"""Adversarial: on stores other than the shared Redis (SQLite with Redis coordination, the
embedded in-memory store), a tick that steps nothing clears the run's failure notes. A failing
run paused during its backoff gets its retry while paused: the Runtime's tick returns the paused
run untouched, yet ``_step`` calls ``marks.moved`` (attempts, backoff, unknown-workflow) as if
the run had moved. After ``resume_run`` the node fails again as attempt 1: an operator who
pauses and resumes a failing run (or a run paused and resumed by its host once per retry)
restarts its failure row each time, and ``tick_max_attempts`` never fails it.

docs/reliability.md, round J: "a pause during a backoff no longer clears the failure notes,
since clearing needs a commit that moved the run" — true of the shared Redis store only (there
the clear rides ``lua/if_saved.lua``, sent only by a tick that changed the run).

At fault: tick.py ``Ticker._step``: ``elif not ctx.created: self.coord.marks.moved(run.run_id,
ctx)`` runs for every tick that did not raise, whether or not it changed the run (the shared
branch only notes ``clear_marks``, applied in ``_count_commit`` when ``changed``).

Deterministic, in-process: a recording dispatcher; messages "delivered" by calling
``Driver.tick`` by hand; the backoff note is moved to now instead of waiting it out.
"""

from __future__ import annotations

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


def _driver(kind: str, prefix: str, tmp_path: Path) -> tuple[Any, Recorder]:
    extra: dict[str, Any] = {}
    if kind == "sqlite":
        extra = {"store_url": f"sqlite:///{tmp_path}/runs.db", "coord_url": STORE_URL}
    elif kind == "memory":
        extra = {"store_url": "memory://"}
    settings = make_settings(prefix, retry_backoff_s=30.0, retry_backoff_max_s=60.0, retry_jitter=False,
                             tick_max_attempts=3, **extra)
    rec = Recorder()
    return build(settings, registry, rec, distributed=kind != "memory"), rec


def _pause_resume_cycles(kind: str, prefix: str, tmp_path: Path) -> tuple[Any, str, str]:
    driver, rec = _driver(kind, prefix, tmp_path)
    fx = f"{prefix}fx"
    run_id = driver.start_run("ai-fail-then-wait", vars={"fx": fx}, dispatch=False)
    reason = "start"
    for _ in range(4):  # the node always fails: FAILED after 3 failures in a row
        try:
            driver.tick(run_id, reason=reason)
        except RuntimeError:
            pass
        if driver.load(run_id).status == RunStatus.FAILED:
            break
        driver.control.pause(run_id)  # an operator looks at the failing run
        retry = [m for m in rec.sent if m[0] == run_id and m[1] == "retry"][-1]
        driver.coord.marks.back_off(run_id, time.time() - 0.01)  # (the backoff is over)
        driver.tick(run_id, reason="retry", message_id=retry[3])  # its retry, while paused: no step
        driver.control.resume(run_id)
        reason = "resumed"  # the resume's tick (the backoff is over: it runs the node)
    return driver, run_id, fx


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_pause_and_resume_during_backoff_keep_the_failure_row(kind: str, prefix: str, tmp_path: Path) -> None:
    driver, run_id, fx = _pause_resume_cycles(kind, prefix, tmp_path)
    state, tries = driver.load(run_id), fx_count(fx, run_id, "tries")
    assert state.status == RunStatus.FAILED and tries == 3, (
        f"the node failed {tries} times in a row (tick_max_attempts=3) and the run is "
        f"{state.status.value}: each paused retry cleared the failed attempts")


def test_held_pause_and_resume_during_backoff_keep_the_failure_row_redis(prefix: str, tmp_path: Path) -> None:
    """Held on the shared Redis store: the paused retry changes nothing and clears nothing."""
    driver, run_id, fx = _pause_resume_cycles("redis", prefix, tmp_path)
    assert driver.load(run_id).status == RunStatus.FAILED and fx_count(fx, run_id, "tries") == 3
