"""Check caller data at the door: JSON objects only, finite numbers, under a size limit.

Run state is JSON by contract; a value that is not JSON would be accepted by the
in-memory store and break later in a worker. We refuse it at the caller instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import PayloadError

_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
#: Deepest nesting of dicts/lists accepted. The stores, the ledger and deepcopy all
#: recurse per level; a payload that only just serialises here would fail later in a worker.
MAX_DEPTH = 100


def _depth_over(value: Any, limit: int) -> bool:
    """True if ``value`` nests dicts/lists deeper than ``limit`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)
    return False


def check_object(value: Any, *, what: str, limit: int) -> dict[str, Any]:
    """Return ``value`` if it is a JSON object of at most ``limit`` bytes.

    Raises:
        PayloadError: not a dict, not JSON-serialisable (bytes, sets, NaN, objects), nested
            deeper than MAX_DEPTH, or too large.
    """
    if not isinstance(value, dict):
        raise PayloadError(f"{what} must be a JSON object (dict), got {type(value).__name__}")
    if _depth_over(value, MAX_DEPTH):
        raise PayloadError(f"{what} is nested deeper than {MAX_DEPTH} levels")
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"{what} is not JSON-serialisable: {exc}") from exc
    except RecursionError as exc:
        raise PayloadError(f"{what} is nested too deeply to serialise") from exc
    size = len(text.encode("utf-8"))
    if size > limit:
        raise PayloadError(f"{what} is {size} bytes of JSON, over the limit of {limit} bytes")
    return value


def check_run_id(run_id: Any) -> str:
    """Raises PayloadError unless ``run_id`` looks like an AbstractRuntime run id."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise PayloadError(f"run_id must match [A-Za-z0-9_-]{{1,128}}, got {run_id!r}")
    return run_id
