"""Check caller data at the door: JSON objects only, finite numbers, under a size limit.

Run state is JSON by contract; a value that is not JSON would be accepted by the
in-memory store and break later in a worker. We refuse it at the caller instead.
The check encodes with the stores' own codec (``codec.py``), so what it accepts
the stores can write, and its size is the size stored.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from .codec import check_text, dumps_bytes
from .errors import PayloadError

try:  # the names the run stores index (0.12+); same rule below for older releases
    from abstractruntime.storage.base import mailbox_names_of as mailbox_names
except ImportError:  # pragma: no cover - abstractruntime < 0.12

    def mailbox_names(vars_obj: Any) -> frozenset:
        """Mailbox names a run declares in ``vars.events_mailbox`` (str or list of str)."""
        declared = vars_obj.get("events_mailbox") if isinstance(vars_obj, dict) else None
        if isinstance(declared, str):
            declared = [declared]
        if not isinstance(declared, list):
            return frozenset()
        return frozenset(m.strip() for m in declared if isinstance(m, str) and m.strip())

_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
#: Deepest nesting of dicts/lists accepted. The stores, the ledger and deepcopy all
#: recurse per level; a payload that only just serialises here would fail later in a worker.
MAX_DEPTH = 100
#: Most mailbox names one run may declare (``vars.events_mailbox``). The Redis run
#: store keeps one index key per name and rewrites each on every save of the run:
#: 25,000 names made 25,009 keys and saves that blocked Redis for 35-52 ms.
MAX_MAILBOX_NAMES = 64
#: Longest mailbox name, in UTF-8 bytes: each one is part of a Redis key name.
MAX_MAILBOX_NAME_BYTES = 256


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


def check_mailbox_names(names: Iterable[str], *, what: str) -> None:
    """Refuse mailbox names the Redis run store would turn into too many index keys.

    ``save_run.lua`` splits the names on newlines, so a name holding one would
    make several keys: refused too.

    Raises:
        PayloadError: more than MAX_MAILBOX_NAMES names, or a name over
            MAX_MAILBOX_NAME_BYTES bytes, holding a newline or a lone surrogate.
    """
    names = sorted(names)
    if len(names) > MAX_MAILBOX_NAMES:
        raise PayloadError(
            f"{what} declares {len(names)} mailbox names in vars.events_mailbox, over the limit "
            f"of {MAX_MAILBOX_NAMES} (MAX_MAILBOX_NAMES): each name is an index key, rewritten on every save"
        )
    for name in names:
        check_text(name, what=f"{what}: mailbox name {name[:40]!r} (MAX_MAILBOX_NAME_BYTES)",
                   limit=MAX_MAILBOX_NAME_BYTES)
        if "\n" in name:
            raise PayloadError(f"{what} declares a mailbox name holding a newline: {name!r}")


def check_start_vars(value: Any, *, what: str, limit: int) -> dict[str, Any]:
    """Return ``value`` if it can start a run: ``check_object``, plus the mailbox bound.

    Raises:
        PayloadError: as ``check_object`` and ``check_mailbox_names``.
    """
    check_object(value, what=what, limit=limit)
    check_mailbox_names(mailbox_names(value), what=what)
    return value


def check_run_id(run_id: Any) -> str:
    """Raises PayloadError unless ``run_id`` looks like an AbstractRuntime run id."""
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise PayloadError(f"run_id must match [A-Za-z0-9_-]{{1,128}}, got {run_id!r}")
    return run_id
