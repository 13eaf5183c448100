"""``RedisRunStore``: AbstractRuntime's run store on Redis, shared by every worker.

Each run is one hash (``{prefix}run:<id>``) holding the RunState JSON, a version
counter and the few fields the indexes are built from. Every save goes through
one Lua script (``lua/save_run.lua``) that checks the lease (fencing) and the
expected version, writes the record and moves every index entry in the same
atomic step, so a query never sees a run in two states. The key layout is in
``docs/redis-keys.md``.

Semantics mirror ``SqliteRunStore`` (ordering, filters, return types); the one
deliberate difference is that deadlines are compared as instants (ISO strings
with any offset or ``Z`` are parsed), not as strings.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import redis

from abstractruntime.core.models import RunState, RunStatus, WaitReason, WaitState
from abstractruntime.storage.base import RunStore

from .. import _scripts
from ..batch import ahead, collecting_ahead, has_ahead, send_ahead, withdraw
from ..codec import encode_text
from ..errors import (ConfigError, CorruptRunError, LeaseLostError, PayloadError, RunControlledError,
                      VersionConflictError)
from ..isotime import to_epoch as iso_to_epoch
from ..payloads import check_mailbox_names
from .handoff import take
from .known import Control, known
from .redis_conn import connect, decodes_replies, load_script, redis_errors

logger = logging.getLogger(__name__)

# --- helpers that only newer abstractruntime releases ship (floor: 0.6.0) ---------
try:  # compact, by-reference serializer (0067); same bytes the built-in stores write
    from abstractruntime.storage.serialize import dumps_compact as _dumps, runstate_to_dict as _to_dict
except ImportError:  # pragma: no cover - older abstractruntime

    def _to_dict(run: RunState) -> Dict[str, Any]:
        return dataclasses.asdict(run)

    def _dumps(obj: Any) -> str:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


try:  # the built-in SQLite store's reader: one definition of "a RunState from JSON"
    from abstractruntime.storage.sqlite import _runstate_from_dict as _from_dict
except ImportError:  # pragma: no cover - abstractruntime without the SQLite backend

    def _from_dict(data: Dict[str, Any]) -> RunState:
        waiting = None
        raw = data.get("waiting")
        if isinstance(raw, dict):
            fields = {f.name for f in dataclasses.fields(WaitState)}
            kw = {k: v for k, v in raw.items() if k in fields}
            kw["reason"] = WaitReason(str(raw["reason"]))
            waiting = WaitState(**kw)
        fields = {f.name for f in dataclasses.fields(RunState)}
        kw = {k: v for k, v in data.items() if k in fields}
        kw["status"] = RunStatus(str(data.get("status")))
        kw["waiting"] = waiting
        return RunState(**kw)


try:
    from abstractruntime.core.run_identity import verify_run_identity as _verify_identity
except ImportError:  # pragma: no cover - pre-0.6 has no identity check

    def _verify_identity(existing: RunState, requested: RunState) -> None:
        return None


try:
    from abstractruntime.storage.base import mailbox_names_of as _mailbox_names
except ImportError:  # pragma: no cover - pre-0.12

    def _mailbox_names(vars_obj: Any) -> frozenset:
        declared = vars_obj.get("events_mailbox") if isinstance(vars_obj, dict) else None
        if isinstance(declared, str):
            declared = [declared]
        if not isinstance(declared, list):
            return frozenset()
        return frozenset(m.strip() for m in declared if isinstance(m, str) and m.strip())


try:
    from abstractruntime.core.vars import is_paused_vars as _is_paused
except ImportError:  # pragma: no cover

    def _is_paused(vars_obj: Any) -> bool:
        try:
            return bool(vars_obj["_runtime"]["control"]["paused"])
        except (KeyError, TypeError):
            return False


try:  # run-index row fields (automations / lifecycle / workspace); newer releases only
    from abstractruntime.core.run_attribution import (
        automation_index_fields as _automation_fields,
        is_turn_root as _is_turn_root,
        latest_occurrence_of as _latest_occurrence_of,
        row_matches as _row_matches,
        workspace_index_fields as _workspace_fields,
    )
    from abstractruntime.core.run_lifecycle import run_lifecycle_index_fields as _lifecycle_fields

    _HAS_RUN_INDEX = True
except ImportError:  # pragma: no cover
    _HAS_RUN_INDEX = False

Fence = Callable[[str], Optional[Tuple[str, str]]]

_ACTIVE = (RunStatus.RUNNING.value, RunStatus.WAITING.value)
_DEADLINE_REASONS = (WaitReason.UNTIL, WaitReason.EVENT)
_CHUNK = 256


def _epoch_or_zero(value: Any) -> float:
    try:
        return iso_to_epoch(str(value))
    except (TypeError, ValueError):
        return 0.0


def _value(v: Any) -> str:
    return str(getattr(v, "value", v))


def control_of(run: RunState) -> Control:
    """``(status, paused)`` of ``run`` exactly as a save stores them (what the control probe reads)."""
    return _value(run.status), bool(_is_paused(run.vars))


def _refused(rid: str, res: Any, expected_version: int | None) -> None:
    """Raise what a refusing reply of ``save_run.lua`` means.

    Raises:
        LeaseLostError, VersionConflictError, CorruptRunError, RunControlledError.
    """
    code = int(res[0])
    if code == -1:
        raise LeaseLostError(rid)
    if code == -2:
        raise VersionConflictError(rid, expected_version, int(res[1]))
    if code == -3:
        raise CorruptRunError(rid, "the key holds a non-hash value; create refused")
    if code == -4:
        raise RunControlledError(rid, str(res[1]), str(res[2]) == "1")


#: How long a leased tick trusts the control fields it last confirmed (see ``known.py``).
CONTROL_TTL_S = 0.25


class RedisRunStore(RunStore):
    """A ``RunStore`` + ``QueryableRunStore`` on Redis, with compare-and-set and fencing.

    ``fence(run_id)`` (optional) returns ``(lease_key, token)`` for a run this
    process holds a lease on, or None: every save then writes only if
    ``GET lease_key == token`` in the same script, so a worker whose lease
    expired can never overwrite a newer owner's state.

    ``max_record_bytes`` bounds one serialised RunState (default 16 MiB).
    ``control_ttl_s``: how long a leased tick answers the control probe from what
    it last confirmed (0 turns that off; fenced saves check the fields anyway).
    Not for Redis Cluster: a save touches index keys that are not hash-tagged.

    ``client`` must decode replies to str (``decode_responses=True``, as
    ``redis_conn.connect`` and ``from_url`` make it): the queries read run ids
    back from the indexes and build keys from them.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "arc:",
        fence: Fence | None = None,
        max_record_bytes: int = 16 * 1024 * 1024,
        control_ttl_s: float = CONTROL_TTL_S,
    ) -> None:
        """Raises:
            ConfigError: ``client`` returns bytes (built without ``decode_responses=True``);
                with such a client ``list_runs`` and the other queries found nothing.
        """
        if not decodes_replies(client):
            raise ConfigError(
                "RedisRunStore needs a Redis client that decodes replies to str, and this one "
                "returns bytes: use RedisRunStore.from_url(url), or build the client with "
                "redis.Redis.from_url(url, decode_responses=True)"
            )
        self._r = client
        self._prefix = prefix
        self._fence = fence
        self._max_bytes = int(max_record_bytes)
        self._control_ttl_s = float(control_ttl_s)
        self._save_script = load_script(client, "save_run")
        self._delete_script = load_script(client, "delete_run")

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "arc:", **kwargs: Any) -> "RedisRunStore":
        """A store on ``url`` (``redis://``, ``rediss://``, ``unix://``) through the package's
        pooled, retrying, decoding connection (``redis_conn.connect``); ``kwargs`` as ``__init__``.

        Raises:
            ValueError: the URL is malformed (redis-py's message).
        """
        return cls(connect(url), prefix=prefix, **kwargs)

    # --- key names ---------------------------------------------------------------

    @property
    def client(self) -> redis.Redis:
        return self._r

    @property
    def prefix(self) -> str:
        return self._prefix

    def run_key(self, run_id: str) -> str:
        return f"{self._prefix}run:{run_id}"

    @property
    def due_key(self) -> str:
        """Sorted set of run ids with a wait deadline, score = epoch seconds."""
        return f"{self._prefix}due"

    def _ix(self, name: str) -> str:
        return f"{self._prefix}ix:{name}"

    # --- encoding ----------------------------------------------------------------

    def _encode(self, run: RunState) -> List[Any]:
        """ARGV[6:] of save_run.lua for ``run``.

        Raises:
            PayloadError: not JSON, text UTF-8 cannot encode (a lone surrogate), too large,
                a malformed ``waiting.until``, or too many or too long mailbox names
                (``payloads.MAX_MAILBOX_NAMES``: each is an index key).
        """
        rid = str(run.run_id)
        try:
            text = _dumps(_to_dict(run))
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"Run '{rid}' is not JSON-serialisable: {exc}") from exc
        except RecursionError as exc:
            raise PayloadError(f"Run '{rid}' is nested too deeply to serialise") from exc
        doc = encode_text(text, what=f"Run '{rid}'")
        if len(doc) > self._max_bytes:
            raise PayloadError(
                f"Run '{rid}' record is {len(doc)} bytes, over the {self._max_bytes}-byte "
                "limit (max_record_bytes); keep large data in an artifact store"
            )
        status = _value(run.status)
        waiting = run.waiting
        reason = _value(waiting.reason) if waiting is not None else ""
        until_iso, due, wk = "", "", ""
        if waiting is not None and waiting.reason in _DEADLINE_REASONS and waiting.until:
            until_iso = str(waiting.until)
            if status == RunStatus.WAITING.value:
                try:
                    due = repr(iso_to_epoch(until_iso))
                except ValueError as exc:
                    raise PayloadError(
                        f"Run '{rid}' waits until {until_iso!r}, which is not an ISO-8601 time"
                    ) from exc
        if (
            status == RunStatus.WAITING.value
            and waiting is not None
            and waiting.reason == WaitReason.EVENT
            and isinstance(waiting.wait_key, str)
            and waiting.wait_key
        ):
            wk = waiting.wait_key
        names = _mailbox_names(run.vars) if status in _ACTIVE else frozenset()
        check_mailbox_names(names, what=f"Run '{rid}'")
        mbox = "\n".join(sorted(names))
        return [
            doc,
            status,
            "1" if _is_paused(run.vars) else "0",
            str(run.workflow_id),
            reason,
            until_iso,
            due,
            str(run.parent_run_id or ""),
            repr(_epoch_or_zero(run.created_at)),
            repr(_epoch_or_zero(run.updated_at)),
            wk,
            str(run.session_id or ""),
            mbox,
            self._index_row(run),
        ]

    @staticmethod
    def _index_row(run: RunState) -> str:
        if not _HAS_RUN_INDEX:
            return ""
        waiting = run.waiting
        attribution = _automation_fields(run.vars, run_id=run.run_id)
        row = {
            "run_id": str(run.run_id),
            "workflow_id": str(run.workflow_id),
            "status": _value(run.status),
            "wait_reason": _value(waiting.reason) if waiting is not None else None,
            "wait_until": (str(waiting.until) if waiting.until else None) if waiting is not None else None,
            "parent_run_id": str(run.parent_run_id) if run.parent_run_id else None,
            "actor_id": str(run.actor_id) if run.actor_id else None,
            "session_id": str(run.session_id) if run.session_id else None,
            "created_at": str(run.created_at) if run.created_at else None,
            "updated_at": str(run.updated_at) if run.updated_at else None,
            **_lifecycle_fields(run.vars),
            **attribution,
            **_workspace_fields(run.vars),
        }
        try:
            return _dumps(row)
        except (TypeError, ValueError):
            return ""

    def _decode(self, run_id: str, doc: Any) -> RunState:
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

    # --- RunStore ------------------------------------------------------------------

    def _write(self, run: RunState, *, mode: str, expected_version: int | None) -> list:
        rid = str(run.run_id or "").strip()
        if not rid:
            raise PayloadError("RunState.run_id must be non-empty")
        argv_tail = self._encode(run)
        keys = [self.run_key(rid)]
        token = ""
        fenced = self._fence(rid) if self._fence is not None else None
        entry = known(rid) if fenced is not None else None
        if fenced is not None:
            lease_key, token = fenced
            keys.append(lease_key)
        expected = "" if expected_version is None else str(int(expected_version))
        control = entry.control if entry is not None and mode == "save" else None
        guard = [control[0], "1" if control[1] else "0"] if control is not None else ["", ""]
        args = [self._prefix, rid, expected, token, mode, *argv_tail, *guard]
        if entry is not None and mode == "save" and expected_version is None and collecting_ahead():
            # The tick's own run: the save rides the next round trip the tick makes anyway
            # (before its next node runs, any message it sends, or its lease release).
            if entry.queued_create is not None and withdraw(entry.queued_create):
                # not sent yet: create it as it is now
                self._queue_create(run, fenced, entry, commit=True, argv_tail=argv_tail)
                return [1, 0]
            entry.queued_create = None
            script = self._save_script
            ahead(self._r, lambda target: _scripts.call_in(target, script, keys, args),
                  lambda res: _refused(rid, res, None), commit=True)
            entry.confirm((argv_tail[1], argv_tail[2] == "1"))
            return [1, 0]
        with redis_errors(self._r):
            res = self._run_save(keys, args)
        _refused(rid, res, expected_version)
        if entry is not None and int(res[0]) == 1:
            entry.confirm((argv_tail[1], argv_tail[2] == "1"))
            if mode == "create":
                entry.created = run
        return res

    def _run_save(self, keys: List[str], args: List[Any]) -> Any:
        """The save script, behind any ledger appends the tick queued (``batch.ahead``):
        one round trip, and the appends land first, as the Runtime ordered them."""
        script = self._save_script
        reply = send_ahead(self._r, lambda target: _scripts.call_in(target, script, keys, args))
        return _scripts.settle(reply, script, keys, args)

    def save(self, run: RunState, expected_version: int | None = None) -> int:
        """Write ``run`` and its index entries atomically; return its new version.

        Inside a tick, a save of the tick's own leased run is queued to ride the tick's
        next round trip (see ``batch.py``); it then returns 0 and a refusal is raised there.

        ``expected_version`` turns the save into compare-and-set (a missing run
        has version 0). Nothing is written when any check fails.

        Raises:
            LeaseLostError: the fence's lease key no longer holds our token.
            RunControlledError: under the lease, the run was cancelled, paused or
                resumed by someone else since the tick last confirmed it.
            VersionConflictError: the stored version differs from ``expected_version``.
            PayloadError: the run is not JSON, is over ``max_record_bytes``, or
                has an unparseable ``waiting.until``.
            StoreUnavailableError: Redis cannot be reached.
        """
        res = self._write(run, mode="save", expected_version=expected_version)
        return int(res[1])

    def create_if_absent(self, run: RunState) -> Tuple[RunState, bool]:
        """Create ``run`` unless its id exists (one script: check and write).

        Returns ``(run, True)`` when created, ``(existing, False)`` when a run
        with the same creation identity exists.

        Raises:
            RunIdentityConflict: the id is taken by a run with another identity.
            CorruptRunError: the id's key holds garbage.
            LeaseLostError, PayloadError, StoreUnavailableError: as ``save``.
        """
        queued = self._create_fresh(run)
        if queued is not None:
            return queued, True
        res = self._write(run, mode="create", expected_version=None)
        if int(res[0]) == 1:
            return run, True
        existing = self._decode(str(run.run_id), res[2])
        _verify_identity(existing, run)
        return existing, False

    def _create_fresh(self, run: RunState) -> Optional[RunState]:
        """In a start's tick, under the lease of a run id this process just made up, queue
        the create ahead of the tick's next write instead of sending it (nobody else can
        have created that id). Returns ``run`` if queued, else None."""
        rid = str(run.run_id or "").strip()
        fenced = self._fence(rid) if rid and self._fence is not None else None
        entry = known(rid) if fenced is not None else None
        if entry is None or not entry.fresh:
            return None
        entry.fresh = False
        self._queue_create(run, fenced, entry, commit=False)  # nobody knows the id: no hurry
        entry.created = run
        return run

    def _queue_create(self, run: RunState, fenced: Tuple[str, str], entry: Any, *, commit: bool,
                      argv_tail: Optional[List[Any]] = None) -> None:
        """Queue a create of ``run`` (as it is now) that drops our lease if the run exists
        after all, so nothing queued behind it can write (see save_run.lua, ARGV[22]).
        ``commit``: it carries a save's state, which must land before the next node."""
        rid = str(run.run_id)
        argv_tail = self._encode(run) if argv_tail is None else argv_tail
        keys = [self.run_key(rid), fenced[0]]
        args = [self._prefix, rid, "", fenced[1], "create", *argv_tail, "", "", "1"]
        script = self._save_script

        def created(res: Any) -> None:
            code = int(res[0])
            if code == -1:
                raise LeaseLostError(rid)
            if code != 1:
                raise CorruptRunError(rid, f"a run made up here already existed (create returned {code})")

        entry.queued_create = ahead(self._r, lambda target: _scripts.call_in(target, script, keys, args),
                                    created, commit=commit)
        entry.confirm((argv_tail[1], argv_tail[2] == "1"))

    def _send_ahead(self) -> None:
        """A read must see what the tick queued: send it first."""
        if has_ahead():
            with redis_errors(self._r):
                send_ahead(self._r)

    def load(self, run_id: str) -> Optional[RunState]:
        """The stored run, or None when no run has this id (like the built-in stores).

        Raises:
            CorruptRunError: the record exists but cannot be decoded.
            StoreUnavailableError: Redis cannot be reached.
        """
        rid = str(run_id or "").strip()
        if not rid:
            return None
        handed = take(rid)  # the tick path's own read of this run, under its lease
        if handed is not None:
            return handed
        self._send_ahead()
        with redis_errors(self._r):
            try:
                # One read: "HGET doc, then EXISTS" raced with a concurrent create.
                doc, version = self._r.hmget(self.run_key(rid), ["doc", "v"])
            except (redis.exceptions.ResponseError, UnicodeDecodeError) as exc:  # WRONGTYPE, or not UTF-8
                raise CorruptRunError(rid, str(exc)) from exc
        if doc is None and version is None:
            return None
        return self._decode(rid, doc)

    def read_op(self, run_id: str) -> Callable[[Any], Any]:
        """``load`` as a pipeline step, for callers that batch it with other reads."""
        key = self.run_key(str(run_id))
        return lambda pipe: pipe.hmget(key, ["doc", "v"])

    def from_read(self, run_id: str, raw: Any) -> Optional[RunState]:
        """The result of ``read_op`` as ``load`` would return it.

        Raises:
            CorruptRunError: the record cannot be decoded (or is not a hash).
        """
        if isinstance(raw, Exception):
            raise CorruptRunError(run_id, str(raw))
        doc, version = raw
        if doc is None and version is None:
            return None
        return self._decode(run_id, doc)

    def shares_connection(self, client: Any) -> bool:
        """True if ``client`` talks to this store's Redis through the same pool."""
        return getattr(client, "connection_pool", None) is self._r.connection_pool

    def load_with_version(self, run_id: str) -> Tuple[Optional[RunState], Optional[int]]:
        """``(run, version)`` read together, for compare-and-set loops.

        Raises:
            CorruptRunError, StoreUnavailableError: as ``load``.
        """
        self._send_ahead()
        rid = str(run_id or "").strip()
        with redis_errors(self._r):
            try:
                doc, version = self._r.hmget(self.run_key(rid), ["doc", "v"])
            except (redis.exceptions.ResponseError, UnicodeDecodeError) as exc:
                raise CorruptRunError(rid, str(exc)) from exc
        if doc is None and version is None:
            return None, None
        return self._decode(rid, doc), int(version or 0)

    def get_version(self, run_id: str) -> Optional[int]:
        """The run's version (1 after the first save), or None if it does not exist.

        Raises:
            CorruptRunError: the key holds a non-hash value.
            StoreUnavailableError: Redis cannot be reached.
        """
        self._send_ahead()
        rid = str(run_id or "").strip()
        with redis_errors(self._r):
            try:
                v = self._r.hget(self.run_key(rid), "v")
            except redis.exceptions.ResponseError as exc:
                raise CorruptRunError(rid, str(exc)) from exc
        return None if v is None else int(v)

    def probe_control(self, run_id: str) -> Optional[tuple[str, bool]]:
        """Cheap ``(status, paused)`` read for tick's external-control probe; None if unknown.

        Under the run's lease, the answer the tick confirmed within ``control_ttl_s``
        is given without a read; the next save checks it in Redis.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        rid = str(run_id or "").strip()
        if not rid:
            return None
        entry = known(rid) if self._fence is not None and self._fence(rid) is not None else None
        confirmed = entry.fresh_control(self._control_ttl_s) if entry is not None else None
        if confirmed is not None:
            return confirmed  # a leased tick's own run, confirmed moments ago (see known.py)
        self._send_ahead()
        with redis_errors(self._r):
            try:
                status, paused = self._r.hmget(self.run_key(rid), ["status", "paused"])
            except redis.exceptions.ResponseError:
                return None  # corrupt: let the runtime full-load and see the error
        if status is None or paused is None:
            return None
        return str(status), paused == "1"

    def delete(self, run_id: str) -> bool:
        """Remove a run and its index entries; True if it existed.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        self._send_ahead()
        rid = str(run_id or "").strip()
        if not rid:
            return False
        with redis_errors(self._r):
            return bool(self._delete_script(keys=[self.run_key(rid)], args=[self._prefix, rid]))

    # --- reading many runs -----------------------------------------------------------

    def _fetch(self, ids: Sequence[str], field: str = "doc") -> List[Tuple[str, Any]]:
        """``(run_id, field value)`` for each id, one round trip; corrupt keys give None."""
        if not ids:
            return []
        with redis_errors(self._r):
            pipe = self._r.pipeline(transaction=False)
            for rid in ids:
                pipe.hget(self.run_key(rid), field)
            try:
                values = pipe.execute(raise_on_error=False)
            except UnicodeDecodeError:
                # A record that is not UTF-8 fails the whole pipeline: read one by one,
                # so that one bad record is skipped and does not hide the others.
                values = [self._fetch_one(rid, field) for rid in ids]
        return list(zip(ids, values))

    def _fetch_one(self, rid: str, field: str) -> Any:
        """One field, or the exception reading it raised (as ``raise_on_error=False`` gives)."""
        try:
            return self._r.hget(self.run_key(rid), field)
        except (redis.exceptions.ResponseError, UnicodeDecodeError) as exc:
            return exc

    def _decode_many(self, pairs: Iterable[Tuple[str, Any]]) -> List[RunState]:
        out: List[RunState] = []
        for rid, doc in pairs:
            if doc is None:
                continue  # index entry of a run deleted since the index read
            if isinstance(doc, Exception):
                logger.warning("Skipping run %r: %s", rid, doc)
                continue
            try:
                out.append(self._decode(rid, doc))
            except CorruptRunError as exc:
                logger.warning("Skipping corrupt run record: %s", exc)
        return out

    def _walk(
        self,
        key: str,
        *,
        accept: Callable[[RunState], bool],
        limit: int,
        desc: bool = True,
    ) -> List[RunState]:
        """Runs of index ``key`` in score order that pass ``accept``, up to ``limit``.

        Candidates are re-checked against their record, so an index entry that
        went stale can never leak a wrong run.
        """
        out: List[RunState] = []
        start = 0
        chunk = min(max(limit, 16), 1000)
        while len(out) < limit:
            with redis_errors(self._r):
                if desc:
                    ids = self._r.zrevrange(key, start, start + chunk - 1)
                else:
                    ids = self._r.zrange(key, start, start + chunk - 1)
            if not ids:
                break
            for run in self._decode_many(self._fetch(ids)):
                if accept(run):
                    out.append(run)
                    if len(out) >= limit:
                        break
            start += len(ids)
            chunk = min(chunk * 2, 2000)
        return out

    def _smallest(self, keys: List[str]) -> str:
        if len(keys) == 1:
            return keys[0]
        with redis_errors(self._r):
            pipe = self._r.pipeline(transaction=False)
            for k in keys:
                pipe.zcard(k)
            sizes = pipe.execute()
        return min(zip(sizes, keys))[1]

    # --- QueryableRunStore -------------------------------------------------------------

    def list_runs(
        self,
        *,
        status: Optional[RunStatus] = None,
        wait_reason: Optional[WaitReason] = None,
        workflow_id: Optional[str] = None,
        limit: int = 100,
    ) -> List[RunState]:
        """Runs matching every given filter, ``updated_at`` descending (index walk, not a scan).

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        self._send_ahead()
        keys: List[str] = []
        st = _value(status) if status is not None else None
        wr = _value(wait_reason) if wait_reason is not None else None
        if st is not None:
            keys.append(self._ix(f"status:{st}"))
        if workflow_id is not None:
            keys.append(self._ix(f"wf:{workflow_id}"))
        if wr is not None:
            keys.append(self._ix(f"reason:{wr}"))
        if not keys:
            keys.append(self._ix("all"))

        def accept(run: RunState) -> bool:
            if st is not None and _value(run.status) != st:
                return False
            if workflow_id is not None and run.workflow_id != workflow_id:
                return False
            if wr is not None and (run.waiting is None or _value(run.waiting.reason) != wr):
                return False
            return True

        return self._walk(self._smallest(keys), accept=accept, limit=max(1, int(limit or 100)))

    def list_due_wait_until(self, *, now_iso: str, limit: int = 100) -> List[RunState]:
        """WAITING runs (UNTIL, or EVENT with ``until``) due at ``now_iso``, earliest first.

        O(log N + due): one ZRANGEBYSCORE on the due set. ``now_iso`` may carry
        any offset; a future ``now_iso`` gives "due within the horizon".

        Raises:
            PayloadError: ``now_iso`` is not an ISO-8601 time.
            StoreUnavailableError: Redis cannot be reached.
        """
        self._send_ahead()
        try:
            now = iso_to_epoch(now_iso)
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"now_iso {now_iso!r} is not an ISO-8601 time") from exc
        lim = max(1, int(limit or 100))
        with redis_errors(self._r):
            ids = self._r.zrangebyscore(self.due_key, "-inf", repr(now), start=0, num=lim)
        return [
            run
            for run in self._decode_many(self._fetch(ids))
            if run.status == RunStatus.WAITING and run.waiting is not None and run.waiting.until
        ]

    def due_run_ids(self, *, until_epoch: float, limit: int = 100) -> List[Tuple[str, float]]:
        """``(run_id, due epoch seconds)`` with a deadline at or before ``until_epoch``.

        The cheap form of ``list_due_wait_until`` for timers: no record is read.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        self._send_ahead()
        with redis_errors(self._r):
            pairs = self._r.zrangebyscore(
                self.due_key, "-inf", repr(float(until_epoch)), start=0, num=max(1, int(limit)), withscores=True
            )
        return [(str(m), float(s)) for m, s in pairs]

    def list_children(self, *, parent_run_id: str, status: Optional[RunStatus] = None) -> List[RunState]:
        """Child runs of ``parent_run_id``, ``created_at`` then ``run_id`` ascending.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        self._send_ahead()
        parent = str(parent_run_id or "").strip()
        if not parent:
            return []
        with redis_errors(self._r):
            ids = self._r.zrange(self._ix(f"parent:{parent}"), 0, -1)
        runs = [r for r in self._decode_many(self._fetch(ids)) if r.parent_run_id == parent]
        if status is not None:
            runs = [r for r in runs if r.status == status]
        return runs

    # --- optional fast paths the Runtime looks up -----------------------------------------

    def _members_by_score(self, keys: List[str]) -> List[str]:
        """Members of several sorted sets, highest score first, deduplicated."""
        with redis_errors(self._r):
            pipe = self._r.pipeline(transaction=False)
            for k in keys:
                pipe.zrange(k, 0, -1, withscores=True)
            results = pipe.execute()
        best: Dict[str, float] = {}
        for pairs in results:
            for member, score in pairs:
                if score > best.get(member, float("-inf")):
                    best[member] = score
        return [m for m, _ in sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))]

    def _verified(self, ids: List[str], accept: Callable[[RunState], bool], limit: int) -> List[RunState]:
        out: List[RunState] = []
        for i in range(0, len(ids), 500):
            out.extend(r for r in self._decode_many(self._fetch(ids[i : i + 500])) if accept(r))
            if len(out) >= limit:
                break
        out.sort(key=lambda r: r.updated_at or "", reverse=True)
        return out[:limit]

    @staticmethod
    def _event_key_of(run: RunState) -> Optional[str]:
        if run.status != RunStatus.WAITING or run.waiting is None:
            return None
        if run.waiting.reason != WaitReason.EVENT:
            return None
        wk = run.waiting.wait_key
        return wk if isinstance(wk, str) and wk else None

    def list_event_waiters(self, *, wait_keys: List[str], limit: int = 100) -> List[RunState]:
        """Runs parked in WAITING(EVENT) on any of ``wait_keys``, ``updated_at`` descending. O(waiters).

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        self._send_ahead()
        wanted = [str(k) for k in (wait_keys or []) if isinstance(k, str) and k]
        if not wanted:
            return []
        ids = self._members_by_score([self._ix(f"evt:{k}") for k in wanted])
        keyset = set(wanted)
        return self._verified(ids, lambda r: self._event_key_of(r) in keyset, max(1, int(limit or 100)))

    def list_event_waiters_by_prefix(self, *, prefix: str, limit: int = 100) -> List[RunState]:
        """Runs parked in WAITING(EVENT) on a wait_key starting with ``prefix`` (lex index).

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        self._send_ahead()
        pre = str(prefix or "")
        if not pre:
            return []
        low = b"[" + pre.encode("utf-8")
        high = b"(" + pre.encode("utf-8") + b"\xff"
        with redis_errors(self._r):
            members = self._r.zrangebylex(self._ix("evtkeys"), low, high)
        ids = list(dict.fromkeys(m.rsplit("\0", 1)[-1] for m in members))

        def accept(run: RunState) -> bool:
            wk = self._event_key_of(run)
            return wk is not None and wk.startswith(pre)

        return self._verified(ids, accept, max(1, int(limit or 100)))

    def list_mailbox_runs(self, *, names: List[str], limit: int = 10_000) -> List[RunState]:
        """Active (RUNNING/WAITING) runs declaring any of ``names`` in ``vars.events_mailbox``.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        self._send_ahead()
        wanted = {str(n).strip() for n in (names or []) if isinstance(n, str) and str(n).strip()}
        if not wanted:
            return []
        ids = self._members_by_score([self._ix(f"mbox:{n}") for n in sorted(wanted)])

        def accept(run: RunState) -> bool:
            return _value(run.status) in _ACTIVE and bool(_mailbox_names(run.vars) & wanted)

        return self._verified(ids, accept, max(1, int(limit or 10_000)))

    def next_wait_deadline(self) -> Optional[str]:
        """The earliest ``waiting.until`` among WAITING runs (as stored), or None. O(log N).

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        self._send_ahead()
        with redis_errors(self._r):
            ids = self._r.zrange(self.due_key, 0, 7)
            for rid in ids:
                try:
                    status, until = self._r.hmget(self.run_key(rid), ["status", "until"])
                except redis.exceptions.ResponseError:
                    continue
                if status == RunStatus.WAITING.value and until:
                    return str(until)
        return None

    # --- run index (summaries without loading documents) ---------------------------------

    def list_run_index(
        self,
        *,
        status: Optional[RunStatus] = None,
        workflow_id: Optional[str] = None,
        session_id: Optional[str] = None,
        root_only: bool = False,
        limit: int = 100,
        oldest_first: bool = False,
        automation_id: Any = None,
        role: Any = None,
        session_kind: Any = None,
    ) -> List[Dict[str, Any]]:
        """Index rows (no RunState parse), newest first unless ``oldest_first``.

        Raises:
            NotImplementedError: the installed abstractruntime has no run-index helpers.
            StoreUnavailableError: Redis cannot be reached.
        """
        self._send_ahead()
        if not _HAS_RUN_INDEX:
            raise NotImplementedError("list_run_index needs abstractruntime with core.run_attribution")
        st = _value(status) if status is not None else None
        sid = str(session_id).strip() if session_id is not None else None
        keys: List[str] = []
        if st is not None:
            keys.append(self._ix(f"status:{st}"))
        if workflow_id is not None:
            keys.append(self._ix(f"wf:{workflow_id}"))
        if sid is not None:
            keys.append(self._ix(f"session:{sid}"))
        key = self._smallest(keys) if keys else self._ix("all")
        lim = max(1, int(limit or 100))

        def accept(row: Dict[str, Any]) -> bool:
            if st is not None and row.get("status") != st:
                return False
            if workflow_id is not None and row.get("workflow_id") != str(workflow_id):
                return False
            if sid is not None and str(row.get("session_id") or "").strip() != sid:
                return False
            if root_only and not _is_turn_root(parent_run_id=row.get("parent_run_id"), role=row.get("role")):
                return False
            return _row_matches(row, automation_id=automation_id, role=role, session_kind=session_kind)

        out: List[Dict[str, Any]] = []
        start, chunk = 0, min(max(lim, 16), 1000)
        while len(out) < lim:
            with redis_errors(self._r):
                if oldest_first:
                    ids = self._r.zrange(key, start, start + chunk - 1)
                else:
                    ids = self._r.zrevrange(key, start, start + chunk - 1)
            if not ids:
                break
            for rid, raw in self._fetch(ids, "row"):
                if not raw or isinstance(raw, Exception):
                    continue
                try:
                    row = json.loads(raw)
                except ValueError:
                    logger.warning("Skipping run %r: corrupt index row", rid)
                    continue
                if isinstance(row, dict) and accept(row):
                    out.append(row)
                    if len(out) >= lim:
                        break
            start += len(ids)
            chunk = min(chunk * 2, 2000)
        return out

    def session_kinds(self, session_id: str) -> frozenset:
        """The ``session_kind`` values of the session's runs (empty: no runs).

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        self._send_ahead()
        sid = str(session_id or "").strip()
        if not sid or not _HAS_RUN_INDEX:
            return frozenset()
        rows = self.list_run_index(session_id=sid, limit=1_000_000)
        return frozenset(r.get("session_kind") for r in rows if r.get("session_kind"))

    def latest_occurrence_row(self, automation_id: str) -> Optional[Dict[str, Any]]:
        """Index row of the automation's highest-numbered occurrence, or None.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        self._send_ahead()
        if not _HAS_RUN_INDEX:
            return None
        rows = self.list_run_index(automation_id=str(automation_id), role="occurrence", limit=1_000_000)
        return _latest_occurrence_of(rows)
