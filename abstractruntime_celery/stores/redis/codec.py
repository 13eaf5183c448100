"""A RunState to and from what the Redis run store keeps: the JSON document (the same
bytes the built-in stores write) and the few fields its indexes are built from.

The version shims live here, and nowhere else: newer abstractruntime releases
ship helpers (compact serializer, run-index rows, mailbox names) that 0.6.0 lacks.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, Iterable, Optional

from abstractruntime.core.models import RunState, RunStatus, WaitReason, WaitState

from ...codec import check_text, encode_text
from ...context import Control
from ...errors import ConfigError, CorruptRunError, LeaseLostError, PayloadError, RunControlledError, VersionConflictError
from ...isotime import to_epoch
from ...keys import LAYOUT_VERSION

try:  # compact, by-reference serializer; same bytes the built-in stores write
    from abstractruntime.storage.serialize import dumps_compact as dumps, runstate_to_dict as _to_dict
except ImportError:  # pragma: no cover - older abstractruntime

    def _to_dict(run: RunState) -> Dict[str, Any]:
        return dataclasses.asdict(run)

    def dumps(obj: Any) -> str:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


try:  # the built-in SQLite store's reader: one definition of "a RunState from JSON"
    from abstractruntime.storage.sqlite import _runstate_from_dict as _from_dict
except ImportError:  # pragma: no cover - abstractruntime without the SQLite backend

    def _from_dict(data: Dict[str, Any]) -> RunState:
        waiting = None
        raw = data.get("waiting")
        if isinstance(raw, dict):
            names = {f.name for f in dataclasses.fields(WaitState)}
            kw = {k: v for k, v in raw.items() if k in names}
            kw["reason"] = WaitReason(str(raw["reason"]))
            waiting = WaitState(**kw)
        names = {f.name for f in dataclasses.fields(RunState)}
        kw = {k: v for k, v in data.items() if k in names}
        kw["status"] = RunStatus(str(data.get("status")))
        kw["waiting"] = waiting
        return RunState(**kw)


try:
    from abstractruntime.storage.base import mailbox_names_of
except ImportError:  # pragma: no cover - pre-0.12

    def mailbox_names_of(vars_obj: Any) -> frozenset:
        declared = vars_obj.get("events_mailbox") if isinstance(vars_obj, dict) else None
        if isinstance(declared, str):
            declared = [declared]
        if not isinstance(declared, list):
            return frozenset()
        return frozenset(m.strip() for m in declared if isinstance(m, str) and m.strip())


try:
    from abstractruntime.core.vars import is_paused_vars as is_paused
except ImportError:  # pragma: no cover

    def is_paused(vars_obj: Any) -> bool:
        try:
            return bool(vars_obj["_runtime"]["control"]["paused"])
        except (KeyError, TypeError):
            return False


try:  # run-index row fields (automations / lifecycle / workspace); newer releases only
    from abstractruntime.core.run_attribution import (
        automation_index_fields as _automation_fields,
        is_turn_root,  # noqa: F401 - re-exported for queries.py
        latest_occurrence_of,  # noqa: F401
        row_matches,  # noqa: F401
        workspace_index_fields as _workspace_fields,
    )
    from abstractruntime.core.run_lifecycle import run_lifecycle_index_fields as _lifecycle_fields

    HAS_RUN_INDEX = True
except ImportError:  # pragma: no cover
    HAS_RUN_INDEX = False

#: Most mailbox names one run may declare (``vars.events_mailbox``). The Redis run
#: store keeps one index key per name and rewrites each on every save of the run:
#: 25,000 names made 25,009 keys and saves that blocked Redis for 35-52 ms.
MAX_MAILBOX_NAMES = 64
#: Longest mailbox name, in UTF-8 bytes: each one is part of a Redis key name.
MAX_MAILBOX_NAME_BYTES = 256

ACTIVE = (RunStatus.RUNNING.value, RunStatus.WAITING.value)
#: Statuses a run ends in: a save into one of them puts the run in ``{p}ended`` (retention).
ENDED = (RunStatus.COMPLETED.value, RunStatus.FAILED.value, RunStatus.CANCELLED.value)
_DEADLINE_REASONS = (WaitReason.UNTIL, WaitReason.EVENT)


def value_of(v: Any) -> str:
    return str(getattr(v, "value", v))


def epoch_or_zero(value: Any) -> float:
    try:
        return to_epoch(str(value))
    except (TypeError, ValueError):
        return 0.0


def control_of(run: RunState) -> Control:
    """``(status, paused)`` of ``run`` exactly as a save stores them (what the control probe reads)."""
    return value_of(run.status), bool(is_paused(run.vars))


def encode(run: RunState, max_bytes: int) -> tuple[bytes, dict[str, Any]]:
    """The document and the index fields of ``run`` (ARGV 4 and 5 of ``save_run.lua``).

    Raises:
        PayloadError: not JSON, text UTF-8 cannot encode (a lone surrogate), too large, a
            malformed ``waiting.until``, or too many or too long mailbox names (each is an
            index key: ``MAX_MAILBOX_NAMES``).
    """
    rid = str(run.run_id)
    try:
        text = dumps(_to_dict(run))
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"Run '{rid}' is not JSON-serialisable: {exc}") from exc
    except RecursionError as exc:
        raise PayloadError(f"Run '{rid}' is nested too deeply to serialise") from exc
    doc = encode_text(text, what=f"Run '{rid}'")
    if len(doc) > max_bytes:
        raise PayloadError(f"Run '{rid}' record is {len(doc)} bytes, over the {max_bytes}-byte limit "
                           "(max_record_bytes); keep large data in an artifact store")
    status = value_of(run.status)
    waiting = run.waiting
    until, due = "", ""
    if waiting is not None and waiting.reason in _DEADLINE_REASONS and waiting.until:
        until = str(waiting.until)
        if status == RunStatus.WAITING.value:
            try:
                due = repr(to_epoch(until))
            except ValueError as exc:
                raise PayloadError(f"Run '{rid}' waits until {until!r}, which is not an ISO-8601 time") from exc
    waiting_here = status == RunStatus.WAITING.value and waiting is not None
    wkey = waiting.wait_key if waiting_here and isinstance(waiting.wait_key, str) else ""
    fields = {
        "status": status,
        "paused": "1" if is_paused(run.vars) else "0",
        "wf": str(run.workflow_id),
        "reason": value_of(waiting.reason) if waiting is not None else "",
        "until": until,
        "due": due,
        "parent": str(run.parent_run_id or ""),
        "created": repr(epoch_or_zero(run.created_at)),
        "updated": repr(epoch_or_zero(run.updated_at)),
        "wk": wkey if waiting_here and waiting.reason == WaitReason.EVENT else "",
        "wkey": wkey,
        "sid": str(run.session_id or ""),
        "mbox": sorted(_bounded_mailboxes(run, rid)) if status in ACTIVE else [],
        "row": index_row(run),
        "ended": "1" if status in ENDED else "",
    }
    return doc, fields


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


def _bounded_mailboxes(run: RunState, rid: str) -> frozenset:
    names = mailbox_names_of(run.vars)
    check_mailbox_names(names, what=f"Run '{rid}'")
    return names


def index_row(run: RunState) -> str:
    """The ``list_run_index`` row of ``run`` as JSON ("" on releases without run indexes)."""
    if not HAS_RUN_INDEX:
        return ""
    waiting = run.waiting
    row = {
        "run_id": str(run.run_id),
        "workflow_id": str(run.workflow_id),
        "status": value_of(run.status),
        "wait_reason": value_of(waiting.reason) if waiting is not None else None,
        "wait_until": (str(waiting.until) if waiting.until else None) if waiting is not None else None,
        "parent_run_id": str(run.parent_run_id) if run.parent_run_id else None,
        "actor_id": str(run.actor_id) if run.actor_id else None,
        "session_id": str(run.session_id) if run.session_id else None,
        "created_at": str(run.created_at) if run.created_at else None,
        "updated_at": str(run.updated_at) if run.updated_at else None,
        **_lifecycle_fields(run.vars),
        **_automation_fields(run.vars, run_id=run.run_id),
        **_workspace_fields(run.vars),
    }
    try:
        return dumps(row)
    except (TypeError, ValueError):
        return ""


def decode(run_id: str, doc: Any) -> RunState:
    """Raises: CorruptRunError."""
    if doc is None or doc == "":
        raise CorruptRunError(run_id, "no 'doc' field in the run hash")
    try:
        data = json.loads(doc)
    except ValueError as exc:
        raise CorruptRunError(run_id, f"not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CorruptRunError(run_id, f"JSON {type(data).__name__}, expected an object")
    try:
        return _from_dict(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptRunError(run_id, f"not a RunState ({exc})") from exc


def refused(run_id: str, reply: Any, expected_version: Optional[int]) -> None:
    """Raise what a refusing reply of ``save_run.lua`` means; nothing for a write.

    Raises:
        LeaseLostError, VersionConflictError, CorruptRunError, RunControlledError;
        ConfigError: a new record under another key layout's mark.
    """
    code = int(reply[0])
    if code == -1:
        raise LeaseLostError(run_id)
    if code == -2:
        raise VersionConflictError(run_id, expected_version, int(reply[1]))
    if code == -3:
        raise CorruptRunError(run_id, "the key holds a non-hash value; create refused")
    if code == -4:
        raise RunControlledError(run_id, str(reply[1]), str(reply[2]) == "1")
    if code == -5:
        mark = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
        raise ConfigError(f"run '{run_id}' not written: the key prefix now holds data of key layout {mark}, "
                          f"and this version of abstractruntime-celery uses layout {LAYOUT_VERSION} (another "
                          "version opened the prefix): use another key_prefix")
