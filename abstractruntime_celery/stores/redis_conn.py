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
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..errors import StoreUnavailableError

__all__ = ["connect", "describe", "redis_errors", "load_script", "unavailable"]

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
    forked child gets fresh ones. A ``rediss://`` URL checks the server's
    certificate against its host name (see ``_tls_options``).

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
                **_tls_options(url),
            )
            _pools[key] = pool
    return redis.Redis(connection_pool=pool)


def _tls_options(url: str) -> dict[str, Any]:
    """``ssl_check_hostname=True`` for a ``rediss://`` URL, whatever redis-py defaults to.

    redis-py 5.x does not check the host name (a certificate the CA issued for any
    other host is accepted); 6.0 and later do. An explicit ``ssl_check_hostname`` in
    the URL's query is left to redis-py: ``=false`` is honoured but unsafe (anyone
    holding a certificate from the same CA can pose as the server). With
    ``ssl_cert_reqs=none`` nothing is verified at all, and Python's ``ssl`` refuses a
    host name check without verification, so none is asked for.
    """
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return {}
    query = parse_qs(parts.query)
    reqs = (query.get("ssl_cert_reqs") or ["required"])[-1].strip().lower()
    if "ssl_check_hostname" in query or reqs in ("none", "cert_none"):
        return {}
    return {"ssl_check_hostname": True}


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
