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

import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import Settings
from abstractruntime_celery.driver import build
from devkit.redisproc import PrivateRedis
from tests import workflows_adv_f as wf
from tests import workflows_regress_c as rc

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


def test_scripts_flushed_while_a_node_runs_its_release_pipeline_counts_once(private_redis: PrivateRedis) -> None:
    """Held: every script of the release pipeline meets NOSCRIPT (flushed while the node ran):
    each runs again once, in order, under the lease; the counters riding the save count once."""
    prefix = f"ar{uuid.uuid4().hex[:8]}:"
    gate = rc.Gate(f"{prefix}gate")
    w = build(Settings(store_url=private_redis.db_url(1), key_prefix=prefix, queue=f"{prefix}q"),
              wf.build_registry())
    try:
        run_id = w.start_run("af-child", vars={"gate": gate.name}, dispatch=False)
        out: list = []
        t = threading.Thread(target=lambda: out.append(w.tick(run_id)), daemon=True)
        t.start()
        deadline = time.monotonic() + 20
        while gate.entered() < 1:
            assert time.monotonic() < deadline, "the node never ran"
            time.sleep(0.01)
        private_redis.client(1).script_flush()
        gate.open()
        t.join(20)
        assert out and out[0].skipped is None and out[0].status == "completed", out
        stats = private_redis.client(1).hgetall(f"{prefix}stats")
        assert stats.get(b"transitions") == b"1" and b"lease_lost" not in stats, stats
        keys = [r.get("idempotency_key") for r in w.runtime.ledger_store.list(run_id)]
        assert keys == ["system:completion:only", "system:terminal_status:completed"], keys  # (as unflushed)
    finally:
        gate.open()
        gate.clear()
