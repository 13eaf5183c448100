"""A Redis that forgot our scripts (restarted, SCRIPT FLUSH) must not cost a run its ledger.

Found while a store's Redis was stopped and started under a start message
(tests/test_failfast.py): the first tick after the restart reloaded each script
only when it failed. The start's create (a save) went out alone first, so its
script was cached again; the next pipeline held a ledger append (not cached yet)
then the node's save (cached): the save ran, the append replied NOSCRIPT and ran
again after it, found the run moved on, and was refused. Every completed step of
the run was missing from its ledger, and the tick was counted as "controlled"
(a cancel or pause that never happened), not as a transition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from devkit.redisproc import PrivateRedis
from tests._dispatchers import Recorder
from tests.conftest import make_settings
from tests.workflows import registry

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    redis_server = PrivateRedis(tmp_path / "redis", aof=False).start()
    try:
        yield redis_server
    finally:
        redis_server.stop()


@pytest.mark.parametrize("how", ["tick", "start"])
def test_the_first_tick_after_a_script_flush_keeps_every_ledger_record(
        server: PrivateRedis, prefix: str, how: str) -> None:
    driver = build(make_settings(prefix, store_url=server.db_url(0)), registry, Recorder(), distributed=True)
    if how == "tick":
        run_id = driver.start_run("steps", vars={"n": 2}, dispatch=False)
        server.client().script_flush()  # what a Redis restart does to every loaded script
        outcome = driver.tick(run_id)
    else:
        server.client().script_flush()
        run_id, outcome = driver.start_and_tick("steps", vars={"n": 2})
    state = driver.load(run_id)
    assert state.status == RunStatus.COMPLETED and state.output == {"i": 2}
    assert outcome.skipped is None and outcome.changed, outcome
    statuses = [str(rec.get("status", "")).lower() for rec in driver.runtime.get_ledger(run_id)]
    assert len(statuses) == 2 and all(s.endswith("completed") for s in statuses), statuses
