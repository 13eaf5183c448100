"""Run and ledger stores chosen by URL.

``memory://``                 InMemoryRunStore (embedded mode, one process)
``file:///dir``               JsonFileRunStore + JsonlLedgerStore (worker processes on one host)
``sqlite:///path/to/file.db`` SqliteRunStore + SqliteLedgerStore (worker processes on one host)
``redis://host:port/db``      RedisRunStore + RedisLedgerStore (a fleet), ``rediss://`` for TLS
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from abstractruntime import QueryableRunStore

from ..errors import ConfigError
from ..redact import redact_url
from .fenced import FencedRunStore, LeaseCheck

__all__ = ["open_stores", "require_queryable", "FencedRunStore", "is_redis_url"]


def is_redis_url(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def require_queryable(store: Any) -> None:
    """Raises TypeError unless ``store`` implements QueryableRunStore (as the seed does)."""
    if not isinstance(store, QueryableRunStore):
        raise TypeError(
            f"Scheduler requires a QueryableRunStore, but got {type(store).__name__}. "
            "Use InMemoryRunStore, JsonFileRunStore, SqliteRunStore or RedisRunStore."
        )


def open_stores(url: str, *, prefix: str, still_ours: LeaseCheck, client: Any = None,
                control_ttl_s: float = 0.25) -> tuple[Any, Any]:
    """Open (run_store, ledger_store) for a store URL, fenced by the ticks' leases
    (``still_ours`` checks one for the stores that cannot; ``control_ttl_s``: see
    ``RedisRunStore``).

    Raises:
        ConfigError: the URL scheme is unknown or the URL lacks a path (the message
            quotes the URL with its password masked).
        StoreUnavailableError: a Redis store URL names a server that cannot be reached.
    """
    parsed = urlparse(url)
    scheme = parsed.scheme
    if scheme == "memory":
        from abstractruntime import InMemoryLedgerStore, InMemoryRunStore

        return FencedRunStore(InMemoryRunStore(), still_ours), InMemoryLedgerStore()
    if scheme == "file":
        from abstractruntime import JsonFileRunStore, JsonlLedgerStore

        path = Path(unquote(parsed.path or ""))
        if not str(path) or str(path) == "/":
            raise ConfigError(f"Store URL {redact_url(url)!r} needs a directory: file:///path/to/dir")
        path.mkdir(parents=True, exist_ok=True)
        return FencedRunStore(JsonFileRunStore(path), still_ours, private_copies=True), JsonlLedgerStore(path)
    if scheme == "sqlite":
        from abstractruntime.storage.sqlite import SqliteDatabase, SqliteLedgerStore, SqliteRunStore

        raw = unquote(url[len("sqlite://"):])
        if not raw or raw == "/":
            raise ConfigError(f"Store URL {redact_url(url)!r} needs a file: sqlite:///path/to/runs.db")
        Path(raw).parent.mkdir(parents=True, exist_ok=True)
        db = SqliteDatabase(Path(raw))
        return FencedRunStore(SqliteRunStore(db), still_ours), SqliteLedgerStore(db)
    if is_redis_url(url):
        from .redis import RedisLedgerStore, RedisRunStore, connect

        client = client if client is not None else connect(url)
        return (RedisRunStore(client, prefix=prefix, control_ttl_s=control_ttl_s),
                RedisLedgerStore(client, prefix=prefix))
    raise ConfigError(
        f"Unknown store URL {redact_url(url)!r}: use memory://, file:///dir, sqlite:///file.db or redis://host:port/db"
    )
