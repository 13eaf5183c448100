"""A Redis that forgot our scripts, then had ONE of them loaded back (adversarial, round S).

``context.settle`` reloaded every script at the first NOSCRIPT of a tick's pipeline, but
a pipeline is one MULTI/EXEC: if the save's script is cached and the ledger append's is
not, the save runs inside the EXEC and the append replies NOSCRIPT; reloading afterwards
is too late (the append then finds the run moved on and is refused: the run ends with a
ledger short of its steps, the tick counted as "controlled").

The server got into that state through every call made outside a tick pipeline: redis-py's
``Script.__call__`` loads just the one script on NOSCRIPT (a caller's ``start_run``: its
create is a ``save_run`` call), and so did the lease acquire's own reload. Fixed in
``scripts.py``: every script object loads all scripts, in one MULTI, on NOSCRIPT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from abstractruntime import RunStatus
from redis.exceptions import NoScriptError

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


def test_a_start_from_a_caller_after_a_script_flush_costs_no_other_run_its_ledger(
        server: PrivateRedis, prefix: str) -> None:
    driver = build(make_settings(prefix, store_url=server.db_url(0)), registry, Recorder(), distributed=True)
    run_a = driver.start_run("steps", vars={"n": 2}, dispatch=False)
    server.client().script_flush()  # a Redis restart (AOF keeps the data, never the scripts)
    driver.start_run("steps", vars={"n": 2}, dispatch=False)  # a caller starts another run meanwhile
    outcome = driver.tick(run_a)
    state = driver.load(run_a)
    assert state.status == RunStatus.COMPLETED and state.output == {"i": 2}
    assert outcome.skipped is None and outcome.changed, outcome
    statuses = [str(rec.get("status", "")).lower() for rec in driver.runtime.get_ledger(run_a)]
    assert len(statuses) == 2 and all(s.endswith("completed") for s in statuses), statuses


def test_script_flushes_at_any_point_of_ticks_lose_no_ledger_record_and_apply_no_event_twice(
        server: PrivateRedis, prefix: str) -> None:
    """A thread flushes the script cache every 20 ms while a caller starts runs and sends
    events and ticks run: every step of every run is in its ledger, no tick is refused as
    "controlled", every event is applied once. (Before: a NOSCRIPT reload that loaded the
    failing script alone after a flush, or ``lease_acquire`` alone, left the server with some
    scripts cached: a MULTI of an append then a save ran the save only, and runs ended
    COMPLETED with an empty ledger.) A call that meets flushes between every reload and its
    retry raises NoScriptError, and is made again here as a redelivered message would be."""
    import threading

    settings = make_settings(prefix, store_url=server.db_url(0), retry_backoff_s=0.0, retry_backoff_max_s=0.0,
                             tick_max_attempts=50)
    driver = build(settings, registry, Recorder(), distributed=True)
    flusher = server.client()
    stop = threading.Event()
    flushes = [0]

    def flush_forever() -> None:
        while not stop.is_set():
            flusher.script_flush()
            flushes[0] += 1
            stop.wait(0.02)

    def again(call: Any) -> Any:
        for _ in range(20):
            try:
                return call()
            except NoScriptError:
                pass
        raise AssertionError("twenty calls in a row met a flush after each reload")

    def settle(rid: str) -> Any:
        for _ in range(20):  # a tick that raised NoScriptError counted a failed attempt: tick again
            outcome = again(lambda: driver.tick(rid))
            if outcome.skipped not in ("backoff", "busy"):
                return outcome
        raise AssertionError(f"run {rid} never ticked")

    thread = threading.Thread(target=flush_forever, daemon=True)
    thread.start()
    outcomes = []
    try:
        steps = [again(lambda: driver.start_run("steps", vars={"n": 2}, dispatch=False)) for _ in range(15)]
        events = [again(lambda: driver.start_run("event", vars={"key": "k"}, dispatch=False)) for _ in range(15)]
        outcomes += [settle(rid) for rid in steps + events]
        for i, rid in enumerate(events):
            again(lambda: driver.accept_event(rid, "k", {"v": i}, dispatch=False))
            outcomes.append(settle(rid))
    finally:
        stop.set()
        thread.join(5)
    assert flushes[0] > 2  # (the flusher runs when the ticks let go of the GIL)
    assert not [o for o in outcomes if o.skipped == "controlled"], outcomes
    for rid in steps:
        state = driver.load(rid)
        assert state.status == RunStatus.COMPLETED and state.output == {"i": 2}, rid
        ledger = [str(r.get("status", "")).lower() for r in driver.runtime.get_ledger(rid)]
        assert len(ledger) == 2 and all(s.endswith("completed") for s in ledger), (rid, ledger)
    for i, rid in enumerate(events):
        state = driver.load(rid)
        assert state.status == RunStatus.COMPLETED and state.output == {"event": {"v": i}}, (rid, state.output)
        ledger = [str(r.get("status", "")).lower() for r in driver.runtime.get_ledger(rid)]
        assert ledger == ["started", "waiting", "completed", "completed", "completed"], (rid, ledger)


def test_script_flushes_while_parents_and_children_tick_start_one_child_and_join_it_once(
        server: PrivateRedis, prefix: str) -> None:
    """The same flush loop while parents start children (async, and ticked inline) and are
    resumed with their output; messages are delivered by hand from the recording dispatcher."""
    import threading

    from tests.conftest import fx_count
    from tests.workflows_adv_s import registry as adv_registry

    rec = Recorder()
    settings = make_settings(prefix, store_url=server.db_url(0), retry_backoff_s=0.0, retry_backoff_max_s=0.0,
                             tick_max_attempts=50)
    driver = build(settings, adv_registry, rec, distributed=True)
    flusher, stop = server.client(), threading.Event()

    def flush_forever() -> None:
        while not stop.is_set():
            flusher.script_flush()
            stop.wait(0.02)

    def again(call: Any) -> Any:
        for _ in range(20):
            try:
                return call()
            except NoScriptError:
                pass
        raise AssertionError("twenty calls in a row met a flush after each reload")

    fx = f"{prefix}fx"
    thread = threading.Thread(target=flush_forever, daemon=True)
    thread.start()
    try:
        parents = [again(lambda: driver.start_run("as-parent", vars={"fx": fx, "async": i % 2 == 0, "child_n": 2}))
                   for i in range(12)]
        for _ in range(1000):
            if not rec.sent:
                break
            rid = rec.sent.pop(0)[0]
            again(lambda: driver.tick(rid))
    finally:
        stop.set()
        thread.join(5)
    assert not rec.sent
    runs = driver.run_store.list_runs(limit=100)
    for rid in parents:
        state = driver.load(rid)
        children = [r for r in runs if getattr(r, "parent_run_id", None) == rid]
        assert state.status == RunStatus.COMPLETED and state.output["child"]["output"] == {"i": 2}, state.output
        assert fx_count(fx, rid, "joined") == 1
        assert len(children) == 1 and fx_count(fx, children[0].run_id, "step") == 2, children
