"""Timer planning, without any service: send now, at an ETA, or leave it to the sweep."""

from __future__ import annotations

from datetime import datetime, timezone

from abstractruntime_celery.isotime import from_epoch
from abstractruntime_celery.timers import MIN_ETA_S, plan

NOW = 1_800_000_000.0


def test_a_deadline_beyond_the_horizon_is_left_to_the_sweep() -> None:
    assert plan(from_epoch(NOW + 301), 300, now=NOW).later


def test_a_deadline_within_the_horizon_gets_its_eta() -> None:
    decision = plan(from_epoch(NOW + 10), 300, now=NOW)
    assert decision.send and decision.eta == datetime.fromtimestamp(NOW + 10, tz=timezone.utc)


def test_a_past_deadline_is_sent_at_once() -> None:
    decision = plan(from_epoch(NOW - 5), 300, now=NOW)
    assert decision.send and decision.eta is None


def test_a_delay_the_broker_cannot_take_as_an_eta_is_sent_at_once() -> None:
    decision = plan(from_epoch(NOW + MIN_ETA_S / 2), 300, now=NOW, min_eta_s=MIN_ETA_S)
    assert decision.send and decision.eta is None


def test_a_deadline_in_another_offset_is_the_same_instant() -> None:
    utc = plan("2027-01-15T10:00:00+00:00", 1e12, now=NOW)
    plus2 = plan("2027-01-15T12:00:00+02:00", 1e12, now=NOW)
    assert utc.eta == plus2.eta
