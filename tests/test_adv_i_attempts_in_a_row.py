"""Adversarial: failed attempts are not reset by a node that succeeded and committed when the
next node fails in the same tick, so a run is FAILED after fewer than ``tick_max_attempts``
failures in a row.

README: "after ``tick_max_attempts`` failures in a row the run is marked FAILED".
Node ``a`` fails twice, then succeeds: its progress is saved (``_SavedFirst`` flushes it
before ``b`` runs, on every store), and the run moves to ``b``. ``b`` fails once, in that
same tick. That is one failure in a row, but with ``tick_max_attempts=3`` the run is FAILED:
tick.py ``Ticker._step`` clears the attempts only when ``Runtime.tick`` returns (shared
Redis: ``ctx.clear_marks``, acted on in ``Ticker.tick`` after the release; other stores:
``marks.moved`` right there); a node that raises after an earlier node of the same tick
committed goes to ``Ticker._failed``, which adds to the old count. c82cbc2 kept the
"clear only after the commit held" rule at the level of the whole tick, not of the commits
that held inside it.

Deterministic, in-process, messages delivered by hand: the Redis store (shared path),
SQLite with Redis coordination (non-shared, distributed), and embedded on the memory store.
At fault: tick.py ``Ticker._step`` / ``_failed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from tests._dispatchers import Recorder
from tests.conftest import STORE_URL, fx_count, make_settings
from tests.workflows_adv_i import registry

pytestmark = pytest.mark.timeout(60)


def _driver(kind: str, prefix: str, tmp_path: Path) -> Any:
    url = {"redis": None, "sqlite": f"sqlite:///{tmp_path}/runs.db", "memory": "memory://"}[kind]
    extra: dict[str, Any] = {} if url is None else {"store_url": url}
    if kind == "sqlite":
        extra["coord_url"] = STORE_URL
    settings = make_settings(prefix, retry_backoff_s=0.0, retry_jitter=False, tick_max_attempts=3, **extra)
    return build(settings, registry, Recorder(), distributed=kind != "memory")


def _drive(driver: Any, run_id: str, ticks: int) -> Any:
    for _ in range(ticks):
        state = driver.load(run_id)
        if state.status != RunStatus.RUNNING:
            break
        try:
            driver.tick(run_id, reason="retry")
        except RuntimeError:
            pass
    return driver.load(run_id)


@pytest.mark.parametrize("kind", ["redis", "sqlite", "memory"])
def test_a_node_that_fails_once_after_the_node_before_it_recovered_does_not_fail_the_run(
        kind: str, prefix: str, tmp_path: Path) -> None:
    driver = _driver(kind, prefix, tmp_path)
    fx = f"{prefix}fx"
    run_id = driver.start_run("ai-flaky-two", vars={"fx": fx, "a_fails": 2, "b_fails": 1}, dispatch=False)
    state = _drive(driver, run_id, 6)
    assert state.status == RunStatus.COMPLETED, (
        f"a failed {fx_count(fx, run_id, 'a') - 1} times then succeeded, b failed "
        f"{min(fx_count(fx, run_id, 'b'), 1)} time; the run is {state.status.value}: {state.error}")


@pytest.mark.parametrize("kind", ["redis", "sqlite", "memory"])
def test_held_attempts_start_over_after_a_tick_that_moved_the_run(kind: str, prefix: str, tmp_path: Path) -> None:
    """Held: with one node per tick (max_steps=1), a's recovery resets the count, and b's
    two failures then do not fail the run."""
    driver = _driver(kind, prefix, tmp_path)
    fx = f"{prefix}fx"
    run_id = driver.start_run("ai-flaky-two", vars={"fx": fx, "a_fails": 2, "b_fails": 2}, dispatch=False)
    for _ in range(8):
        if driver.load(run_id).status != RunStatus.RUNNING:
            break
        try:
            driver.tick(run_id, reason="retry", max_steps=1)
        except RuntimeError:
            pass
    state = driver.load(run_id)
    assert state.status == RunStatus.COMPLETED, f"{state.status.value}: {state.error}"
