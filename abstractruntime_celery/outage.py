"""A store that is down is an outage to wait out, not a bad message to drop.

A start, tick or resume task that cannot reach its store (Redis refused or timed
out, SQLite locked) goes back to the broker with a backoff (``retry_later``),
instead of being acknowledged and lost; its log says so in one line, with the
cause, not in a page of chained tracebacks. A retried message keeps its task
id, so a retried start still makes exactly one run (its id is the task id).
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
from typing import Any, Iterator, Optional

from .errors import StoreUnavailableError

log = logging.getLogger(__name__)

__all__ = ["find_outage", "one_line", "put_back_delay", "retry_later"]

#: The most retries counted into the backoff (it is capped long before).
MAX_COUNTED_RETRIES = 30
#: Words of SQLite's ``OperationalError`` that mean "try again later".
SQLITE_BUSY = ("locked", "busy", "unable to open")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        # (``raise X from None`` hides the context: the error said all it had to)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def _is_down(exc: BaseException) -> bool:
    import redis

    if isinstance(exc, StoreUnavailableError):
        return True
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return True
    return isinstance(exc, sqlite3.OperationalError) and any(w in str(exc).lower() for w in SQLITE_BUSY)


#: Error codes of a Redis that answers but takes no write for now (redis-py has no class for
#: them; its pipeline errors put "Command # n (...) of pipeline caused error: " first).
REFUSING = re.compile(r"(?:^|error: )(?:MISCONF|BUSY|MASTERDOWN|NOREPLICAS) ")


def _refuses_writes(exc: BaseException) -> bool:
    """A Redis that answers but takes no write: out of memory (``noeviction``), a replica
    (a master demoted by a failover), one that cannot persist (``MISCONF``), one busy
    running a script past ``busy-reply-threshold`` (``BUSY``)."""
    import redis

    if isinstance(exc, (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)):
        return True
    return isinstance(exc, redis.exceptions.ResponseError) and REFUSING.search(str(exc)) is not None


#: The key a write probe names: ``SET ... XX`` writes nothing (it never exists), but a Redis
#: that refuses writes refuses it all the same.
PROBE_KEY = "outage-probe"


def _store_refuses_writes(driver: Any) -> bool:
    """Does the store's or the coordination's Redis refuse a write now (or not answer)?"""
    clients = [getattr(driver.run_store, "client", None), getattr(driver.coord, "client", None)]
    key = f"{driver.settings.key_prefix}{PROBE_KEY}"
    for client in dict.fromkeys(c for c in clients if c is not None):
        try:
            client.set(key, "1", xx=True, px=1000)
        except Exception:  # noqa: BLE001 - refused or unreachable: the store cannot take our writes
            return True
    return False


def find_outage(exc: BaseException, driver: Any = None) -> Optional[BaseException]:
    """The error in ``exc``'s chain that says the store or the coordination Redis is
    unavailable, or None. Our own ``StoreUnavailableError`` always counts (only our
    clients raise it); a raw redis-py or SQLite error counts only if the store does not
    answer a ping now (with ``driver``), so a node whose own Redis call failed stays a
    node failure, counted and retried by the tick path. A Redis that answers but refuses
    writes (OOM, READONLY, MISCONF) counts if the store's Redis refuses a write probe now:
    its start, tick or resume waits it out instead of being dropped. Raises nothing."""
    chain = list(_chain(exc))
    found = [e for e in chain if _is_down(e)]
    refusing = [e for e in chain if _refuses_writes(e)]
    ours = next((e for e in found if isinstance(e, StoreUnavailableError)), None)
    if ours is not None or not (found or refusing):
        return ours
    if driver is None:
        return (found or refusing)[0]
    if found:
        from .startcheck import ping

        try:
            ping(driver)
        except Exception:  # noqa: BLE001 - any failure to answer is the outage we suspected
            return found[0]
        if isinstance(found[0], sqlite3.OperationalError):
            return found[0]
    if refusing and _store_refuses_writes(driver):
        return refusing[0]
    return None


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line, cut at ``limit`` characters."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return f"{type(exc).__name__}: {text}"


def retry_later(task: Any, settings: Any, outage: BaseException, what: str,
                cause: str = "store unavailable") -> BaseException:
    """Send ``task``'s message again after a backoff (``put_back_delay``), with the same task
    id and arguments, and log one line naming the cause (``cause``, then ``outage`` in one
    line). Returns the exception the task must raise (Celery's ``Retry``), never sends the
    message twice.

    Raises:
        Exception: the broker's error, if the retry itself cannot be sent.
    """
    retries = int(getattr(task.request, "retries", 0) or 0)
    delay = put_back_delay(task, settings)
    log.warning("%s: %s (%s); retried in %.1fs (retry %d)", what, cause, one_line(outage), delay, retries + 1)
    return task.retry(countdown=delay, exc=outage, throw=False, max_retries=None)


def put_back_delay(task: Any, settings: Any) -> float:
    """Seconds before a message put back comes again: ``retry_backoff_s`` doubling with each
    retry of the message up to ``retry_backoff_max_s`` (capped at ``timer_horizon_s``, with
    jitter); whole seconds, at least one, where RabbitMQ's native delayed delivery carries it
    (it refuses less than a second: ``dispatch.whole_seconds``). Raises nothing."""
    from .dispatch import uses_native_delayed_delivery
    from .tick import retry_delay

    retries = int(getattr(task.request, "retries", 0) or 0)
    delay = retry_delay(settings, min(retries + 1, MAX_COUNTED_RETRIES))
    return float(max(1, math.ceil(delay))) if uses_native_delayed_delivery(task.app) else delay
