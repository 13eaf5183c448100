"""Check caller data at the door: JSON objects only, finite numbers, under a size limit.

Run state is JSON by contract; a value that is not JSON would be accepted by the
in-memory store and break later in a worker. We refuse it at the caller instead.
The check encodes with the stores' own codec (``codec.py``), so what it accepts
the stores can write, and its size is the size stored.
"""

from __future__ import annotations

import re
from typing import Any

from .codec import dumps_bytes
from .errors import PayloadError

from .stores.redis.codec import check_mailbox_names
from .stores.redis.codec import mailbox_names_of as mailbox_names

#: A run id: checked with a full match and never altered after (no strip, no case fold):
#: anything a store or Runtime.start would normalise is refused instead.
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: Ids of children we spawn (``runstate.child_run_id``); callers may not choose one.
_CHILD_ID = re.compile(r"sub-[0-9a-f]{32}")
#: Deepest nesting of dicts/lists accepted. The stores, the ledger and deepcopy all
#: recurse per level; a payload that only just serialises here would fail later in a worker.
MAX_DEPTH = 100


def _check_shape(value: Any, what: str, limit: int) -> None:
    """Refuse nesting deeper than ``limit`` and non-string keys (iterative: no recursion).

    ``json.dumps`` would turn a key 1.5 into "1.5": the in-memory store would keep
    one dict and a worker would read back another.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise PayloadError(f"{what} is nested deeper than {limit} levels")
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise PayloadError(f"{what} has a non-string key {key!r}; JSON object keys are strings")
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)


def check_object(value: Any, *, what: str, limit: int) -> dict[str, Any]:
    """Return ``value`` if it is a JSON object of at most ``limit`` bytes.

    Raises:
        PayloadError: not a dict, not JSON-serialisable (bytes, sets, NaN, objects), holds
            text UTF-8 cannot encode (a lone surrogate), has non-string keys, is nested
            deeper than MAX_DEPTH, or is over ``limit`` bytes as the stores encode it.
    """
    if not isinstance(value, dict):
        raise PayloadError(f"{what} must be a JSON object (dict), got {type(value).__name__}")
    _check_shape(value, what, MAX_DEPTH)
    size = len(dumps_bytes(value, what=what))
    if size > limit:
        raise PayloadError(f"{what} is {size} bytes of JSON, over the limit of {limit} bytes")
    return value


def payload_bytes(value: dict[str, Any], *, what: str = "payload") -> bytes:
    """``value`` as the stores write it (``codec.dumps_bytes``).

    Raises:
        PayloadError: not JSON, or text that UTF-8 cannot encode (a lone surrogate).
    """
    return dumps_bytes(value, what=what)


def check_start_vars(value: Any, *, what: str, limit: int) -> dict[str, Any]:
    """Return ``value`` if it can start a run: ``check_object``, plus the mailbox bound.

    Raises:
        PayloadError: as ``check_object`` and ``check_mailbox_names``.
    """
    check_object(value, what=what, limit=limit)
    check_mailbox_names(mailbox_names(value), what=what)
    return value


def check_run_id(run_id: Any) -> str:
    """Return ``run_id`` if it is a run id (the whole string: ``[A-Za-z0-9_-]{1,128}``).

    Raises:
        PayloadError: it is not a str, or is not exactly a run id (a trailing newline,
            spaces, other characters, too long); the message quotes it, cut short.
    """
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        shown = repr(run_id)
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        raise PayloadError(f"run_id must be exactly [A-Za-z0-9_-]{{1,128}}, got {shown}")
    return run_id


def check_new_run_id(run_id: Any) -> str:
    """``check_run_id`` for an id a caller chooses for a new run: ids of the form
    ``sub-<32 hex>`` are the children's, which the driver makes up (a caller could
    otherwise plant a run where a parent will look for its child).

    Raises:
        PayloadError: as ``check_run_id``, or the id is in the children's id space.
    """
    check_run_id(run_id)
    if _CHILD_ID.fullmatch(run_id):
        raise PayloadError(f"run_id {run_id!r} has the form of a child run's id (sub-<32 hex>), "
                           "which only the driver gives; choose another")
    return run_id


def check_wait_key(wait_key: Any, *, limit: int, what: str) -> str:
    """Return ``wait_key`` if it is a non-empty str of at most ``limit`` bytes of UTF-8.

    Raises:
        PayloadError: not a str, empty, not encodable as UTF-8, or too long.
    """
    if not isinstance(wait_key, str) or not wait_key:
        raise PayloadError(f"{what}: wait_key must be a non-empty string, got {type(wait_key).__name__}")
    try:
        size = len(wait_key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise PayloadError(f"{what}: wait_key is not valid text ({exc.reason})") from exc
    if size > limit:
        raise PayloadError(f"{what}: wait_key is {size} bytes, over the limit of {limit} (max_wait_key_bytes)")
    return wait_key
