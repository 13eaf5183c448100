"""Adversarial (retention): a tick that lost its lease comes back after its run was deleted.

A worker froze mid-node (a long call holding the GIL, a stopped process): its lease expired.
Meanwhile the run was cancelled (on Redis a cancel needs no lease: compare-and-set), and
retention deleted it with every key it owned (no lease held, ended long enough ago). Then
the frozen tick goes on: its save is refused (lease lost), and the refusal path counts a
failed attempt for the run, writing ``{p}attempts:<id>`` (and a line in ``stats-errors``)
for a run that no longer exists. The key lives a day; a run started again under that id
within the day (an explicit ``run_id``) starts with a failure already counted. Fixed:
with the store in the coordination Redis, the count is made only while the run's record
exists, in the same step (``lua/add_attempt.lua``); a tick that finds its run gone ends.

The lease's expiry is made by deleting the lease key (what its TTL does to a frozen holder).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from abstractruntime import RunStatus, StepPlan, WorkflowRegistry, WorkflowSpec

from abstractruntime_celery.driver import build
from abstractruntime_celery.sweep import sweep
from devkit.runkeys import keys_naming
from tests._dispatchers import Recorder
from tests.conftest import STORE_URL, make_settings

GATE = threading.Event()
ENTERED = threading.Event()


def _frozen(run: Any, ctx: Any) -> StepPlan:
    ENTERED.set()
    GATE.wait(20)
    return StepPlan(node_id="work", next_node="end")


def _end(run: Any, ctx: Any) -> StepPlan:
    return StepPlan(node_id="end", complete_output={"ok": True})


def _registry() -> WorkflowRegistry:
    reg = WorkflowRegistry()
    reg.register(WorkflowSpec("frozen", "work", {"work": _frozen, "end": _end}))
    return reg


def test_a_frozen_tick_coming_back_after_its_run_was_deleted_leaves_no_key_of_it(prefix: str) -> None:
    client = redis.Redis.from_url(STORE_URL, decode_responses=True)
    GATE.clear()
    ENTERED.clear()
    driver = build(make_settings(prefix, retention_s=0.001), _registry(), Recorder())
    rid = driver.start_run("frozen", dispatch=False)
    outcome: list[Any] = []
    ticker = threading.Thread(target=lambda: outcome.append(driver.tick(rid)))
    ticker.start()
    try:
        assert ENTERED.wait(10), "the node never started"
        assert client.delete(f"{prefix}lease:{rid}") == 1  # its TTL ran out while the worker was frozen
        assert driver.control.cancel(rid).status == RunStatus.CANCELLED
        deadline = time.monotonic() + 10
        while driver.run_store.load(rid) is not None:
            assert time.monotonic() < deadline, "retention never deleted the cancelled run"
            sweep(driver, force=True)
        assert keys_naming(client, prefix, rid) == []
    finally:
        GATE.set()
        ticker.join(20)
    assert outcome, "the frozen tick never came back"
    assert driver.run_store.load(rid) is None
    assert keys_naming(client, prefix, rid) == [], "keys of a deleted run came back"
