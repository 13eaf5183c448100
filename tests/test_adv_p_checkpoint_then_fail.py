"""Adversarial (round P): a node that checkpoints its run (saves it) and then raises is never
failed by ``tick_max_attempts``: it is retried forever, at the first backoff step.

Round O made every save of a leased run that lands end the run's row of failures
(``lua/save_run.lua`` option ``clear``; ``FencedRunStore.on_saved`` for the SQLite and file
stores), and ``Ticker._failed`` counts the failure as the first of a new row
(``add_attempt(fresh=True)``) when the tick saved the run (``_progressed``). A node that saves
its run mid-node (``run._runtime_run_store``, which AbstractRuntime hands every node: a
checkpoint of partial progress in ``vars``) and then raises does so on every try: every
failing tick "progressed", the row is reset to 1 each time, and the run never reaches FAILED
although its ``current_node`` never moved. The retry delay stays at its first step forever.

README / docs/reliability.md: after ``tick_max_attempts`` failures in a row the run is FAILED.

At fault: tick.py ``Ticker._failed`` / ``Ticker._progressed`` (any landed save counts as
progress, with the round O clear in ``lua/save_run.lua`` / ``stores/fenced.py``
``FencedRunStore.on_saved``); nothing checks that the run moved past the failing node.

Deterministic, in-process: a recording dispatcher; ``Driver.tick`` delivers each retry by hand.
"""

from __future__ import annotations

from typing import Any

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from tests._adv_p import Recorder, attempts, due, sqlite_extra
from tests.conftest import fx_count, make_settings
from tests.workflows_adv_p import registry

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("store", ["redis", "sqlite"])
def test_a_node_that_checkpoints_then_raises_is_never_failed(store: str, prefix: str, fx: str,
                                                             tmp_path: Any) -> None:
    settings = make_settings(prefix, retry_backoff_s=30.0, retry_jitter=False, tick_max_attempts=3,
                             **sqlite_extra(store, tmp_path))
    driver = build(settings, registry, Recorder(), distributed=True)
    run_id = driver.start_run("ap-save-then-fail", vars={"fx": fx}, dispatch=False)
    for _ in range(5):  # 5 tries, every one failing, with tick_max_attempts=3
        due(driver, run_id)
        with pytest.raises(RuntimeError, match="timed out"):
            driver.tick(run_id, reason="retry")
        if driver.load(run_id).status == RunStatus.FAILED:
            break
    state = driver.load(run_id)
    assert state.status == RunStatus.FAILED, (
        f"{fx_count(fx, run_id, 'tries')} tries of 'work' failed (tick_max_attempts=3) and the run is "
        f"{state.status.value}, attempts note {attempts(driver, run_id)!r}: each try's checkpoint save reset the row")
