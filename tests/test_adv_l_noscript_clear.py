"""Adversarial: round K moved the clear of a run's failure notes (non-shared stores: SQLite
here, with Redis coordination) into its own script, queued in the lease-release pipeline
*before* ``lease_release.lua``. When the server did not have that script cached (a Redis
restart, after which the other scripts were loaded again one by one by whoever called them
first), its EVALSHA in that MULTI replied NOSCRIPT while the release script ran and deleted
the lease. ``settle`` then ran the clear again on its own, *after* the EXEC: the lease was no
longer this tick's and nothing was cleared. The tick moved the run, but its failure row went
on: a later single failure of another node counted as the second in a row, and with
``tick_max_attempts=2`` the run was FAILED on its first failure.

Now the clear is part of ``lua/lease_release.lua`` itself (extra keys, deleted only if the
lease is still ours): a NOSCRIPT reply runs the whole release again, with its clear. The
test makes the release script unknown to the server (as a restart would; the script cache
is not flushed globally here, other suites share this Redis), and redis-py's Script object
loads it again on its own fallback call.

Deterministic, in-process (recording dispatcher, ``Driver.tick`` by hand).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from tests._dispatchers import Recorder
from tests.conftest import STORE_URL, fx_count, make_settings
from tests.workflows_adv_j import registry

pytestmark = pytest.mark.timeout(60)


def _setup(prefix: str, tmp_path: Path) -> tuple[Any, Recorder, str, str]:
    settings = make_settings(prefix, store_url=f"sqlite:///{tmp_path}/runs.db", coord_url=STORE_URL,
                             retry_backoff_s=30.0, retry_backoff_max_s=60.0, retry_jitter=False,
                             tick_max_attempts=2)
    rec = Recorder()
    driver = build(settings, registry, rec, distributed=True)
    fx = f"{prefix}fx"
    run_id = driver.start_run("ai-flaky-two", vars={"fx": fx, "a_fails": 1, "b_fails": 1}, dispatch=False)
    with pytest.raises(RuntimeError, match="a is down"):
        driver.tick(run_id, reason="start", max_steps=1)  # attempt 1, backoff
    driver.coord.marks.back_off(run_id, time.time() - 0.01)  # (a's backoff is over)
    return driver, rec, run_id, fx


def _unknown_to_server(script: Any) -> None:
    script.sha = "0" * 40  # as after a restart: EVALSHA replies NOSCRIPT; redis-py loads it on its fallback


def _attempts(driver: Any, run_id: str) -> Optional[str]:
    return redis.Redis.from_url(STORE_URL, decode_responses=True).get(
        driver.coord.keys.attempts(run_id))


def test_a_clear_whose_script_the_server_forgot_still_clears(prefix: str, tmp_path: Path) -> None:
    driver, rec, run_id, fx = _setup(prefix, tmp_path)
    _unknown_to_server(driver.coord.leases._release)
    retry = [m for m in rec.sent if m[0] == run_id and m[1] == "retry"][-1]
    out = driver.tick(run_id, reason="retry", message_id=retry[3], max_steps=1)  # a runs: the run moved
    assert out.changed and fx_count(fx, run_id, "a") == 2
    left = _attempts(driver, run_id)
    try:
        driver.tick(run_id, reason="continue")  # b fails, once
    except RuntimeError:
        pass
    run = driver.load(run_id)
    assert run.status == RunStatus.RUNNING, (
        f"a failed once, then a tick moved the run (a committed); b then failed once, yet the run is "
        f"{run.status.value}: {run.error!r} (attempts note left after the moving tick: {left!r})")

