"""A Redis that forgot its scripts (a restart, SCRIPT FLUSH) reloads them one by one, as each
is first called again: a worker whose tick only took and gave back a lease (a duplicate tick)
has loaded ``lease_acquire``/``lease_release`` again, nothing else. The next tick that runs a
node sends its last writes (the ledger append, the save) in the release pipeline: the release
runs there, the append meets NOSCRIPT, and ``settle`` runs it again *after* the lease is gone:
it was refused as "lease lost", although the tick held its lease throughout and its save landed
(the run COMPLETED, its step record lost, ``lease_lost`` and ``runs_failed`` counted).

Fixed (``scripts.py``): a NOSCRIPT reply, wherever it is met, loads every script of the
package in one atomic step (``preload`` in a MULTI), never the one script alone: our own
processes never leave the server knowing some of our scripts and not others. (A server
made to know only some by someone else, e.g. a worker of an older version during a rolling
deploy, still would.)
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import Settings
from abstractruntime_celery.driver import build
from devkit.redisproc import PrivateRedis
from tests import workflows_adv_f as wf

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis", aof=False).start()
    yield server
    server.stop()


def test_a_tick_after_a_partial_script_reload_commits_under_the_lease_it_held(private_redis: PrivateRedis) -> None:
    prefix = f"ar{uuid.uuid4().hex[:8]}:"
    w = build(Settings(store_url=private_redis.db_url(1), key_prefix=prefix, queue=f"{prefix}q"),
              wf.build_registry())
    waiting = w.start_run("af-loop", vars={"n": 2}, dispatch=False)
    assert w.tick(waiting).status == "waiting"

    private_redis.client(1).script_flush()  # what a Redis restart does to every loaded script
    assert w.tick(waiting).changed is False  # a duplicate tick: reloads the lease scripts only
    run_id = w.start_run("af-child", vars={}, dispatch=False)  # (the create reloads save_run)

    outcome = w.tick(run_id)
    stats = private_redis.client(1).hgetall(f"{prefix}stats")
    assert outcome.skipped is None, (outcome, stats)
    assert w.load(run_id).status == RunStatus.COMPLETED
    assert b"lease_lost" not in stats and b"runs_failed" not in stats, stats  # (seen: both 1)
    assert len(w.runtime.ledger_store.list(run_id)) >= 1  # (seen: 0, its step record is lost)
