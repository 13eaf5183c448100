"""Which failures a task waits out (the store is down) and which it does not, and how they read.

No service: the exceptions are the ones redis-py, SQLite and our own clients raise.
"""

from __future__ import annotations

import sqlite3

import pytest
import redis

from abstractruntime_celery import AbstractRuntimeCeleryError, DispatchError, StoreUnavailableError
from abstractruntime_celery.outage import find_outage, one_line


def _chained(inner: BaseException, outer: BaseException, hide: bool = False) -> BaseException:
    try:
        try:
            raise inner
        except BaseException:
            if hide:
                raise outer from None
            raise outer
    except BaseException as exc:  # noqa: BLE001 - the chained exception is what we test
        return exc


def test_our_store_unavailable_error_anywhere_in_the_chain_is_an_outage() -> None:
    ours = StoreUnavailableError("Cannot reach Redis at 127.0.0.1:1: refused")
    found = find_outage(_chained(ours, RuntimeError("a node failed while it was handled")))
    assert found is ours


@pytest.mark.parametrize("exc", [redis.exceptions.ConnectionError("Error 111 connecting"),
                                 redis.exceptions.TimeoutError("Timeout reading"),
                                 redis.exceptions.BusyLoadingError("LOADING"),
                                 sqlite3.OperationalError("database is locked")])
def test_raw_client_errors_are_outages_when_nothing_says_otherwise(exc: BaseException) -> None:
    assert find_outage(exc) is exc


@pytest.mark.parametrize("exc", [ValueError("bad vars"), sqlite3.OperationalError("no such table: runs"),
                                 ConnectionError("a node's own HTTP call"), KeyError("x")])
def test_other_errors_are_not_outages(exc: BaseException) -> None:
    assert find_outage(exc) is None


def test_an_error_raised_from_none_hides_its_context() -> None:
    hidden = _chained(redis.exceptions.ConnectionError("broker"), DispatchError("r1", "start", "refused"), hide=True)
    assert find_outage(hidden) is None


def test_one_line_is_one_line_and_bounded() -> None:
    line = one_line(RuntimeError("first\n  second\n" + "x" * 1000), limit=50)
    assert "\n" not in line and line.startswith("RuntimeError: first second") and len(line) < 80


def test_dispatch_error_names_the_run_and_is_a_connection_error() -> None:
    err = DispatchError("order-17", "start", "redis://:***@h:6379/0: OperationalError: refused")
    assert isinstance(err, ConnectionError) and isinstance(err, AbstractRuntimeCeleryError)
    assert err.run_id == "order-17" and err.event_id is None
    assert "order-17" in str(err) and "run_id='order-17'" in str(err) and "refused" in str(err)
    err.event_id = "ev-1"
    assert "event 'ev-1'" in str(err)
