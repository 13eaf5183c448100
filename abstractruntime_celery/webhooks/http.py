"""What crosses the line between a web framework and the receiver: a request (method, path,
headers with lower-case names, body bytes) and a response (status, JSON object, headers)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping


@dataclass(frozen=True)
class HookRequest:
    """One HTTP request as the adapters hand it over: header names in lower case."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class HookResponse:
    """What to answer: a status, a JSON object, and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def content(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode("utf-8")


def lower_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header names in lower case; of a repeated header, the first one counts."""
    out: dict[str, str] = {}
    for name, value in pairs:
        out.setdefault(name.lower(), value)
    return out
