"""Child runs on a fleet: a spawn node re-run after a crash finds its first child."""

from __future__ import annotations

import copy

from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from abstractruntime_celery.runstate import child_run_id
from tests.conftest import make_settings
from tests.workflows import registry


def test_spawn_replayed_after_a_crash_reuses_the_first_child(prefix: str) -> None:
    driver = build(make_settings(prefix), registry)
    parent_id = driver.start_run("parent", vars={"child_delay": 60}, dispatch=False)
    before_spawn = copy.deepcopy(driver.load(parent_id))  # what a crash would leave in the store
    driver.tick(parent_id)
    first = driver.load(parent_id)
    assert first.status == RunStatus.WAITING
    child_id = first.waiting.details["sub_run_id"]
    assert child_id == child_run_id(before_spawn)

    driver.run_store.save(before_spawn)  # the parent's wait "was never saved"
    driver.tick(parent_id)  # the spawn node runs again

    again = driver.load(parent_id)
    assert again.waiting.details["sub_run_id"] == child_id
    assert [c.run_id for c in driver.run_store.list_children(parent_run_id=parent_id)] == [child_id]


def test_spawns_at_different_steps_get_different_children(prefix: str) -> None:
    driver = build(make_settings(prefix), registry)
    a = driver.start_run("parent", vars={"child_delay": 60}, dispatch=False)
    b = driver.start_run("parent", vars={"child_delay": 60}, dispatch=False)
    driver.tick(a)
    driver.tick(b)
    assert driver.load(a).waiting.details["sub_run_id"] != driver.load(b).waiting.details["sub_run_id"]
