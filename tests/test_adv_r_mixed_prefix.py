"""A Redis run store given to ``build`` with a key prefix of its own, on the coordination's
Redis (same server and database, so ``_check_one_redis`` accepts it): since f1081ed the tick
path treats it as *not shared* (``Ticker.shared`` asks for one prefix too), but two things
still take the store's prefix for the coordination's:

* the failure notes: a moving save's ``clear`` option (``save_run.lua``) deletes
  ``<store prefix>attempts:<id>``, while the notes live under the coordination's prefix, and
  the not-shared path clears nothing else for a Redis store (``FencedRunStore.on_saved`` is
  for the file/SQLite stores; ``clear_marks`` only for the shared one). A recovered node's
  failures stay in the row: a later single failure of another node fails the run;
* the sweep (``sweep._walks``: same connection) walks the store's indexes (``due``,
  ``ix-status:running``, ``ix-reason:subworkflow``) under the coordination's prefix, where
  ``save_run.lua`` never writes them: a run whose timer message was lost is never found.

Both made a setup mistake silent: ``build`` now refuses a given Redis store whose prefix is
not ``key_prefix`` (``driver._check_one_prefix``). In-process, real Redis, a recording dispatcher.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from abstractruntime_celery.driver import build
from abstractruntime_celery.errors import ConfigError
from abstractruntime_celery.stores.redis import RedisRunStore
from abstractruntime_celery.sweep import sweep
from tests._dispatchers import Recorder
from tests.conftest import STORE_URL, make_settings
from tests.workflows_adv_i import registry

pytestmark = pytest.mark.timeout(60)


def test_a_redis_store_with_another_prefix_than_key_prefix_is_refused_at_build(prefix: str) -> None:
    store = RedisRunStore.from_url(STORE_URL, prefix=f"{prefix}s:")
    with pytest.raises(ConfigError, match="key prefix"):
        build(make_settings(prefix), registry, Recorder(), distributed=True, run_store=store)


def test_a_redis_store_with_key_prefix_as_its_prefix_is_accepted_and_swept(prefix: str) -> None:
    rec = Recorder()
    store = RedisRunStore.from_url(STORE_URL, prefix=prefix)
    driver = build(make_settings(prefix), registry, rec, distributed=True, run_store=store)
    run_id = _timer_lost(driver, rec)
    report = sweep(driver, force=True)
    assert run_id in [m[0] for m in rec.sent], (report, rec.sent)


def _timer_lost(driver: Any, rec: Recorder) -> str:
    """A run parked on a timer that is now due, every message it was sent lost."""
    run_id = driver.start_run("timer", vars={"delay": 0.05}, dispatch=False)
    assert driver.tick(run_id).status == "waiting"
    rec.sent.clear()
    time.sleep(0.1)  # (due now)
    return run_id


def test_held_one_prefix_the_sweep_finds_a_due_timer_whose_message_was_lost(prefix: str) -> None:
    rec = Recorder()
    driver = build(make_settings(prefix), registry, rec, distributed=True)
    run_id = _timer_lost(driver, rec)
    sweep(driver, force=True)
    assert run_id in [m[0] for m in rec.sent], rec.sent
