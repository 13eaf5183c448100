"""Limits on what one run's inbox takes, and on what one tick reads (regression, branch regress-e).

Before: a run accepted events under any wait key of any length (an 8 MiB key was
accepted), and its inbox had no bound (150 events of 262 KB made a 49.5 MB hash that
every tick read whole); error records quoted caller strings in full.

Now: ``max_wait_key_bytes``, ``max_inbox_events`` and ``max_inbox_bytes`` are checked
at the caller with a clear error and nothing stored; a tick reads every event's small
header but only the payload it applies (measured here: bytes of Redis replies read
during one tick); ``stats.errors`` records quote what callers supplied, cut short.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

import pytest
from abstractruntime import RunStatus
from redis.connection import AbstractConnection

from abstractruntime_celery import PayloadError, Settings, create_scheduled_runtime
from tests.conftest import make_app, make_settings
from tests.workflows_regress_e import registry

# --- adapters (the only lines that differ in the copy run against d599363) -----------------------


def _settings(prefix: str, **overrides: Any) -> Settings:
    return make_settings(prefix, **overrides)


def _embedded_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)


def _pending_events(sr: Any, run_id: str) -> list[Any]:
    return list(sr.driver.coord.inbox.pending(run_id).events)


# --------------------------------------------------------------------------------------------------

@contextmanager
def runtime(prefix: str, **overrides: Any) -> Iterator[Any]:
    """A distributed ScheduledRuntime with no worker: runs are ticked here, by the test."""
    settings = _settings(prefix, **overrides)
    sr = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry, auto_start=False)
    try:
        yield sr
    finally:
        sr.stop()


def _running(sr: Any, workflow: str, **vars: Any) -> str:
    """A RUNNING run that was never ticked: any event for it is an early one, kept in its inbox."""
    return sr.driver.start_run(workflow, vars=vars, dispatch=False)


def _no_trace_of_refused(sr: Any, run_id: str, accepted: int, accepted_before: int) -> None:
    assert len(_pending_events(sr, run_id)) == accepted
    assert sr.stats.events_accepted == accepted_before + accepted


# --- wait keys ----------------------------------------------------------------------------------------

def test_an_eight_mib_wait_key_is_refused_at_the_caller_and_nothing_is_stored(prefix: str) -> None:
    with runtime(prefix) as sr:
        run_id = _running(sr, "event", key="k")
        before = sr.stats.events_accepted
        with pytest.raises(PayloadError) as info:
            sr.resume_event(run_id=run_id, wait_key="w" * (8 * 1024 * 1024), payload={"x": 1}, wait=False)
        assert "max_wait_key_bytes" in str(info.value)
        assert len(str(info.value)) < 1000  # the message does not quote the key
        _no_trace_of_refused(sr, run_id, 0, before)


def test_a_wait_key_is_measured_in_bytes_and_one_at_the_limit_still_answers_its_wait(prefix: str) -> None:
    at_limit = "€" * 341 + "k"          # 1,024 bytes of UTF-8 (342 characters)
    over = "€" * 342                    # 1,026 bytes (342 characters)
    with runtime(prefix, max_wait_key_bytes=1024) as sr:
        run_id = _running(sr, "event", key=at_limit)
        assert sr.tick(run_id).waiting.wait_key == at_limit
        sr.resume_event(run_id=run_id, wait_key=at_limit, payload={"x": 2}, wait=False)
        assert sr.tick(run_id).output == {"event": {"x": 2}}
        early = _running(sr, "event", key=over)   # (not ticked: any key is an early event's)
        before = sr.stats.events_accepted
        with pytest.raises(PayloadError) as info:
            sr.resume_event(run_id=early, wait_key=over, payload={"x": 1}, wait=False)
        assert "max_wait_key_bytes" in str(info.value)
        _no_trace_of_refused(sr, early, 0, before)


# --- events and bytes per run ---------------------------------------------------------------------------

def test_an_inbox_takes_at_most_max_inbox_events_and_refuses_the_next_with_nothing_stored(prefix: str) -> None:
    with runtime(prefix, max_inbox_events=5) as sr:
        run_id = _running(sr, "loop", key="k")
        before = sr.stats.events_accepted
        for i in range(5):
            sr.resume_event(run_id=run_id, wait_key="k", payload={"i": i}, wait=False)
        with pytest.raises(PayloadError) as info:
            sr.resume_event(run_id=run_id, wait_key="k", payload={"i": 5}, wait=False)
        assert "max_inbox_events" in str(info.value) and run_id in str(info.value)
        _no_trace_of_refused(sr, run_id, 5, before)
        # the run takes the five (in order), and its inbox has room again
        state = sr.tick(run_id)
        assert state.vars["n"] == 5 and state.vars["last"] == {"i": 4}
        sr.resume_event(run_id=run_id, wait_key="k", payload={"i": 6}, wait=False)
        assert sr.tick(run_id).vars["last"] == {"i": 6}


def test_an_inbox_takes_at_most_max_inbox_bytes_of_payloads_and_refuses_the_next_with_nothing_stored(
        prefix: str) -> None:
    blob = "b" * 40_000
    with runtime(prefix, max_inbox_bytes=100_000, max_payload_bytes=60_000) as sr:
        run_id = _running(sr, "loop", key="k")
        before = sr.stats.events_accepted
        sr.resume_event(run_id=run_id, wait_key="k", payload={"i": 0, "blob": blob}, wait=False)
        sr.resume_event(run_id=run_id, wait_key="k", payload={"i": 1, "blob": blob}, wait=False)
        with pytest.raises(PayloadError) as info:
            sr.resume_event(run_id=run_id, wait_key="k", payload={"i": 2, "blob": blob}, wait=False)
        assert "max_inbox_bytes" in str(info.value)
        _no_trace_of_refused(sr, run_id, 2, before)
        sr.resume_event(run_id=run_id, wait_key="k", payload={"i": 3}, wait=False)  # a small one still fits
        state = sr.tick(run_id)
        assert state.vars["n"] == 3 and state.vars["last"] == {"i": 3}


# --- what one tick reads ----------------------------------------------------------------------------------

class ReplyBytes:
    """Bytes of every Redis reply read by this thread (strings and bytes, summed through arrays)."""

    def __init__(self) -> None:
        self.local = threading.local()

    @staticmethod
    def size(value: Any) -> int:
        if isinstance(value, (bytes, bytearray, str)):
            return len(value)
        if isinstance(value, dict):
            return sum(ReplyBytes.size(k) + ReplyBytes.size(v) for k, v in value.items())
        if isinstance(value, (list, tuple, set)):
            return sum(ReplyBytes.size(v) for v in value)
        return 8

    @contextmanager
    def counting(self) -> Iterator[list[int]]:
        total = [0]
        self.local.total = total
        original = AbstractConnection.read_response
        meter = self

        def read_response(conn: Any, *args: Any, **kwargs: Any) -> Any:
            reply = original(conn, *args, **kwargs)
            counter = getattr(meter.local, "total", None)
            if counter is not None:
                counter[0] += ReplyBytes.size(reply)
            return reply

        AbstractConnection.read_response = read_response  # type: ignore[method-assign]
        try:
            yield total
        finally:
            AbstractConnection.read_response = original  # type: ignore[method-assign]
            self.local.total = None


def _bytes_of_one_tick(sr: Any, run_id: str) -> int:
    with ReplyBytes().counting() as total:
        outcome = sr.driver.tick(run_id, reason="tick")
    assert outcome.skipped is None and outcome.status == "waiting"
    return total[0]


def test_a_tick_does_not_read_the_payloads_of_events_it_does_not_apply(prefix: str) -> None:
    """Two runs waiting on a one-hour timer before their event wait ("later"); one's inbox holds
    four tiny events for that later wait, the other's four of 250 KB (a million bytes). A tick
    of either reads about the same: the headers, the run, not the payloads."""
    with runtime(prefix) as sr:
        small = _running(sr, "timer-then-event", delay=3600, key="later")
        large = _running(sr, "timer-then-event", delay=3600, key="later")
        for run_id in (small, large):
            assert sr.tick(run_id).waiting.reason.value == "until"
        for i in range(4):
            sr.resume_event(run_id=small, wait_key="later", payload={"i": i}, wait=False)
            sr.resume_event(run_id=large, wait_key="later", payload={"i": i, "blob": "x" * 250_000}, wait=False)
        assert len(_pending_events(sr, large)) == 4
        read_small = [_bytes_of_one_tick(sr, small) for _ in range(3)]
        read_large = [_bytes_of_one_tick(sr, large) for _ in range(3)]
        # a million bytes wait in the large inbox; each tick reads a few kilobytes of it at most
        print("bytes read per tick: small inbox", read_small, "large inbox", read_large)
        assert max(read_large) < 50_000, read_large
        assert max(read_large) - min(read_small) < 20_000, (read_small, read_large)
        assert len(_pending_events(sr, large)) == 4  # and nothing was applied early


def test_the_tick_that_applies_one_event_reads_its_payload_and_not_the_others(prefix: str) -> None:
    """A run waiting on "k" with one 200 KB event for it and three of 200 KB for "other":
    the tick applies the one and reads about one payload's worth, not four."""
    with runtime(prefix) as sr:
        run_id = _running(sr, "event", key="k")
        for i in range(3):
            sr.resume_event(run_id=run_id, wait_key="other", payload={"i": i, "blob": "o" * 200_000}, wait=False)
        assert sr.tick(run_id).status == RunStatus.WAITING
        sr.resume_event(run_id=run_id, wait_key="k", payload={"blob": "k" * 200_000}, wait=False)
        with ReplyBytes().counting() as total:
            outcome = sr.driver.tick(run_id, reason="event")
        assert outcome.status == "completed"
        print("bytes read by the applying tick", total[0])
        assert total[0] < 200_000 + 60_000, total[0]


# --- error records ------------------------------------------------------------------------------------------

def test_an_unapplied_event_with_a_long_wait_key_is_recorded_cut_short_when_its_run_ends(prefix: str) -> None:
    key = "L" * 100_000
    with runtime(prefix, max_wait_key_bytes=200_000) as sr:
        run_id = _running(sr, "steps", n=2)
        sr.resume_event(run_id=run_id, wait_key=key, payload={"x": 1}, wait=False)
        assert sr.tick(run_id).status == RunStatus.COMPLETED  # it never waited on that key
        records = [e for e in sr.stats.errors if run_id in e]
        assert len(records) == 1, sr.stats.errors
        assert "before event" in records[0] and "LLLL" in records[0]
        assert len(records[0]) <= 1_100, len(records[0])
        assert _pending_events(sr, run_id) == []


def test_the_embedded_mode_keeps_the_same_limits() -> None:
    from tests.workflows import WORKFLOWS

    sr = create_scheduled_runtime(workflows=list(WORKFLOWS),
                                  settings=_embedded_settings(max_inbox_events=2, max_wait_key_bytes=64))
    try:
        run_id = sr.driver.start_run("event", vars={"key": "k"}, dispatch=False)  # RUNNING, not ticked
        with pytest.raises(PayloadError) as info:
            sr.resume_event(run_id=run_id, wait_key="w" * 65, payload={"x": 0}, wait=False)
        assert "max_wait_key_bytes" in str(info.value)
        sr.driver.accept_event(run_id, "k", {"x": 1}, dispatch=False)
        sr.driver.accept_event(run_id, "other", {"x": 2}, dispatch=False)
        with pytest.raises(PayloadError) as info:
            sr.driver.accept_event(run_id, "other", {"x": 3}, dispatch=False)
        assert "max_inbox_events" in str(info.value)
        assert len(_pending_events(sr, run_id)) == 2
    finally:
        sr.stop()
