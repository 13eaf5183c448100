"""Adversarial: a failing node's backoff is bypassed by any tick that is not the run's own:
an event sent early to the RUNNING run (accepted in strict mode when its key is given), a
duplicate or a redelivered message. Each runs the failing node again at once and counts an
attempt, so a node failing for a few seconds (the outage the backoff is there to ride out)
uses up ``tick_max_attempts`` in as many round trips, and the run is FAILED.

README: "A failing node is retried with backoff (``retry_backoff_s`` doubling up to
``retry_backoff_max_s``, with jitter)". docs/reliability.md, round H: "The retry is the
run's own next tick, sent with its backoff; a tick asked for meanwhile merges into it."
c82cbc2 made the retry the run's own noted tick (tick.py ``Ticker._failed`` sets
``want_more`` / ``retry_eta``), which merges only ticks asked for *while the failing tick
holds the lease* (``lua/lease_release.lua``'s pending word). A tick delivered a moment
later, during the backoff, finds the lease free: ``Ticker._begin`` / ``_step`` tick the run
at once, whatever its pending retry (``{p}next:<id>`` is consulted only for the run's own
follow-ups and the sweep, never by the tick path).

Second case: the run's own tick was already queued (noted) when an event's tick ran the
failing node: the release sends no retry with the backoff (the note exists), and the queued
tick, sent with no ETA, runs the node again at once.

Deterministic, in-process: a recording dispatcher; messages are "delivered" by calling
``Driver.tick`` by hand. At fault: tick.py ``Ticker._step`` / ``_failed`` (no tick but the
retry itself consults the pending backoff), ``Ticker._follow_up`` (a note that exists keeps
its earlier, un-backed-off, message).
"""

from __future__ import annotations


import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from tests._dispatchers import Recorder
from tests.conftest import fx_count, make_settings
from tests.workflows_adv_i import registry

pytestmark = pytest.mark.timeout(60)


def _driver(prefix: str):  # type: ignore[no-untyped-def]
    settings = make_settings(prefix, retry_backoff_s=30.0, retry_backoff_max_s=60.0, retry_jitter=False,
                             tick_max_attempts=3)
    rec = Recorder()
    return build(settings, registry, rec, distributed=True), rec


def test_events_sent_during_the_backoff_do_not_rerun_the_failing_node(prefix: str) -> None:
    driver, rec = _driver(prefix)
    fx = f"{prefix}fx"
    run_id = driver.start_run("ai-fail-then-wait", vars={"fx": fx}, dispatch=False)
    with pytest.raises(RuntimeError, match="downstream is down"):
        driver.tick(run_id)
    retry = [m for m in rec.sent if m[0] == run_id]
    assert len(retry) == 1 and retry[0][2] is not None  # held: one retry, 30 s ahead
    # Within the backoff, two events for the run's later wait arrive (strict mode accepts them
    # early, with their key); each is delivered as a tick at once.
    for n in range(2):
        event = driver.accept_event(run_id, "later", {"n": n}, dispatch=False)
        try:
            driver.tick(run_id, reason="event")
        except RuntimeError:
            pass
        assert not driver.event_applied(event)
    tries = fx_count(fx, run_id, "tries")
    state = driver.load(run_id)
    assert tries == 1 and state.status == RunStatus.RUNNING, (
        f"the node ran {tries} times within its 30 s backoff and the run is {state.status.value} "
        f"({state.error}): every event's tick re-ran it at once")


def test_a_node_failing_while_the_runs_own_tick_is_queued_waits_its_backoff(prefix: str) -> None:
    driver, rec = _driver(prefix)
    fx = f"{prefix}fx"
    run_id = driver.start_run("ai-fail-then-wait", vars={"fx": fx}, dispatch=False)
    # The sweep (or a follow-up) queued the run's own tick: noted as its pending tick.
    claimed = driver.coord.leases.claim([run_id])
    assert run_id in claimed
    # An event's tick is delivered first and runs the node, which fails.
    driver.accept_event(run_id, "later", {"n": 0}, dispatch=False)
    with pytest.raises(RuntimeError):
        driver.tick(run_id, reason="event")
    sent_after_failure = [m for m in rec.sent if m[0] == run_id]
    # Then the queued tick is delivered: it should find the node's backoff pending.
    try:
        driver.tick(run_id, reason="orphan", message_id=claimed[run_id])
    except RuntimeError:
        pass
    tries = fx_count(fx, run_id, "tries")
    assert tries == 1, (
        f"the node ran {tries} times at once; the failing tick sent {sent_after_failure} (no backed-off "
        "retry: the queued tick, which has no ETA, is the retry)")


def test_held_the_runs_own_retry_merges_a_tick_asked_while_it_fails(prefix: str) -> None:
    """Held: the retry is sent once, with its ETA, and a duplicate of it is absorbed."""
    driver, rec = _driver(prefix)
    fx = f"{prefix}fx"
    run_id = driver.start_run("ai-fail-then-wait", vars={"fx": fx}, dispatch=False)
    with pytest.raises(RuntimeError):
        driver.tick(run_id)
    mine = [m for m in rec.sent if m[0] == run_id]
    assert len(mine) == 1 and mine[0][1] == "retry" and mine[0][2] is not None and mine[0][3]
    # The sweep sends nothing while the retry is queued.
    assert driver.coord.leases.claim([run_id]) == {}
