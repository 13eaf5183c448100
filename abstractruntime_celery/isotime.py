"""ISO-8601 instants <-> epoch seconds, as AbstractRuntime writes them.

AbstractRuntime stores deadlines as ISO strings (UTC ``+00:00`` since 0.4.34;
older runs may carry ``Z``, another offset, or no offset, which means UTC).
"""

from __future__ import annotations

from datetime import datetime, timezone


def to_epoch(value: str) -> float:
    """Epoch seconds of an ISO-8601 instant.

    Raises:
        ValueError: not an ISO-8601 timestamp.
    """
    text = str(value).strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def from_epoch(ts: float) -> str:
    """The UTC ISO string of an epoch instant (the form AbstractRuntime compares)."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()
