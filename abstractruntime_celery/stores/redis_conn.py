"""Redis connections for the stores: one pool per (url, pid), bounded retries, clear errors.

A forked worker must never share a socket with its parent, so pools are keyed
by process id as well as URL. Transient network errors are retried by
redis-py's own ``Retry`` (exponential backoff, a few attempts); anything that
still fails becomes a ``StoreUnavailableError`` that names host and port.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources
from typing import Any, Iterator

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..errors import StoreUnavailableError

__all__ = ["connect", "decodes_replies", "describe", "redis_errors", "load_script", "unavailable"]

#: Attempts after the first one on ConnectionError / TimeoutError.
RETRIES = 3
#: Backoff: 10 ms, 20 ms, 40 ms ... capped at 0.5 s (bounded: ~0.1 s worst case).
BACKOFF = ExponentialBackoff(cap=0.5, base=0.01)

_pools: dict[tuple[str, int], redis.ConnectionPool] = {}
_pools_lock = threading.Lock()


def connect(url: str) -> redis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` for TLS, ``unix://``).

    User, password and db number come from the URL
    (``redis://user:secret@host:6379/11``). Responses are decoded as UTF-8 str.
    One pool per (url, pid): clients made in one process share sockets, a
    forked child gets fresh ones.

    Raises:
        ValueError: the URL is malformed (redis-py's own message).
    """
    key = (url, os.getpid())
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = redis.ConnectionPool.from_url(
                url,
                decode_responses=True,
                retry=Retry(BACKOFF, RETRIES),
                socket_connect_timeout=5.0,
                socket_timeout=10.0,
                health_check_interval=30,
            )
            _pools[key] = pool
    return redis.Redis(connection_pool=pool)


def decodes_replies(client: Any) -> bool:
    """False if ``client`` is a redis-py client that returns bytes (no ``decode_responses``).

    A client we cannot inspect (not redis-py) is given the benefit of the doubt. Raises nothing.
    """
    get_encoder = getattr(client, "get_encoder", None)
    if not callable(get_encoder):
        return True
    try:
        return bool(get_encoder().decode_responses)
    except Exception:  # noqa: BLE001 - an exotic pool: do not refuse what we cannot read
        return True


def describe(client: Any) -> str:
    """``host:port`` (or the socket path) a client talks to, for error messages."""
    try:
        kw = client.connection_pool.connection_kwargs
    except AttributeError:
        return "<unknown>"
    if kw.get("path"):
        return str(kw["path"])
    return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"


def unavailable(client: Any, exc: BaseException) -> StoreUnavailableError:
    """The error to raise when Redis behind ``client`` cannot be reached."""
    return StoreUnavailableError(
        f"Cannot reach Redis at {describe(client)} after {RETRIES} retries: {exc}"
    )


@contextmanager
def redis_errors(client: Any) -> Iterator[None]:
    """Turn redis-py connection/timeouts into ``StoreUnavailableError``.

    Raises:
        StoreUnavailableError: Redis refused, dropped or timed out the call.
    """
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise unavailable(client, exc) from exc


@lru_cache(maxsize=None)
def _script_source(name: str) -> str:
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def load_script(client: Any, name: str) -> Any:
    """A redis-py ``Script`` for ``stores/lua/<name>.lua`` (EVALSHA, reloads on NOSCRIPT)."""
    return client.register_script(_script_source(name))
