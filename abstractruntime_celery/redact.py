"""URLs as we may print or raise them: with any password replaced by ``***``."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """``url`` with its password (or a user-only secret) replaced by ``***``; never raises."""
    try:
        parts = urlsplit(str(url))
        if parts.password is None and not parts.username:
            return str(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        user = parts.username or ""
        auth = f"{user}:***" if parts.password is not None else "***"
        return urlunsplit((parts.scheme, f"{auth}@{host}", parts.path, parts.query, parts.fragment))
    except (ValueError, TypeError):
        return "<unprintable URL>"
