"""``RedisRunStore``: AbstractRuntime's run store on Redis, shared by every worker.

Each run is one hash (``{p}run:<id>``) holding the RunState JSON, a version
counter and the few fields its indexes are built from. Every write goes through
one Lua script (``lua/save_run.lua``) that checks the lease (fencing), the
expected version and the control state, writes the record and moves every index
entry in the same atomic step, so a query never sees a run in two states. The
key layout is in ``docs/redis-keys.md``; the queries are in ``queries.py``.

Inside a tick (``context.current()``) the store is fenced by the tick's leases,
and the tick's own saves ride its next round trip (``context.WriteQueue``).

Semantics mirror ``SqliteRunStore`` (ordering, filters, return types); the one
deliberate difference is that deadlines are compared as instants, not strings.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, Tuple

import redis

from abstractruntime.core.models import RunState
from abstractruntime.storage.base import RunStore

from ... import scripts
from ...context import QueuedSave, TickContext, current
from ...errors import ConfigError, CorruptRunError, PayloadError, RunExistsError
from ...keys import LAYOUT_VERSION, Keys
from .codec import control_of, decode, encode, refused
from .connection import connect, decodes_replies, redis_errors
from .queries import RunQueries

#: How long a leased tick trusts the control fields it last confirmed (``control_ttl_s``).
CONTROL_TTL_S = 0.25

from abstractruntime.core.run_identity import verify_run_identity


def require_decoding(client: Any, what: str) -> None:
    """Raises ConfigError unless ``client`` decodes replies to str: the queries read run
    ids back from the indexes and build keys from them (with bytes they found nothing)."""
    if not decodes_replies(client):
        raise ConfigError(f"{what} needs a Redis client that decodes replies to str, and this one "
                          f"returns bytes: use {what}.from_url(url), or build the client with "
                          "redis.Redis.from_url(url, decode_responses=True)")


class RedisRunStore(RunQueries, RunStore):
    """A ``RunStore`` + ``QueryableRunStore`` on Redis, with compare-and-set and fencing.

    ``max_record_bytes`` bounds one serialised RunState (default 16 MiB).
    ``control_ttl_s``: how long a leased tick answers the control probe from what
    it last confirmed (0 turns that off; its saves check the fields anyway).
    Not for Redis Cluster: a save touches index keys that are not hash-tagged.

    Raises (constructor):
        ConfigError: ``client`` does not decode replies to str.
    """

    def __init__(self, client: redis.Redis, *, prefix: str = "arc:", max_record_bytes: int = 16 * 1024 * 1024,
                 control_ttl_s: float = CONTROL_TTL_S) -> None:
        require_decoding(client, "RedisRunStore")
        self._r = client
        self.keys = Keys(prefix)
        self._max_bytes = int(max_record_bytes)
        self._control_ttl_s = float(control_ttl_s)
        self._save_script = scripts.register(client, "save_run")
        self._delete_script = scripts.register(client, "delete_run")

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "arc:", **kwargs: Any) -> "RedisRunStore":
        """A store on ``redis://``/``rediss://``/``unix://`` ``url`` (pooled per process).

        Raises:
            ValueError: the URL is malformed.
        """
        return cls(connect(url), prefix=prefix, **kwargs)

    @property
    def client(self) -> redis.Redis:
        return self._r

    @property
    def prefix(self) -> str:
        return self.keys.prefix

    def run_key(self, run_id: str) -> str:
        return self.keys.run(run_id)

    @property
    def due_key(self) -> str:
        """Sorted set of run ids with a wait deadline, score = epoch seconds."""
        return self.keys.due

    def shares_connection(self, client: Any) -> bool:
        """True if ``client`` talks to this store's Redis through the same pool."""
        return getattr(client, "connection_pool", None) is self._r.connection_pool

    def _sent_before(self, then: Optional[Callable[[Any], Any]] = None) -> Any:
        """Run ``then`` (a read) after the tick's queued writes, in one round trip: a read
        in a tick sees what the tick wrote. Outside a tick, just ``then``."""
        ctx = current()
        with redis_errors(self._r):
            if ctx is None:
                return then(self._r) if then is not None else None
            return ctx.queue.send_before(self._r, then)

    # --- writes ----------------------------------------------------------------------

    def _script_args(self, run: RunState, mode: str, expected_version: Optional[int],
                     ctx: Optional[TickContext], own: bool) -> tuple[list[str], list[Any], dict[str, Any]]:
        rid = str(run.run_id)
        doc, fields = encode(run, self._max_bytes)
        fence = ctx.fence(rid) if ctx is not None else None
        options: dict[str, Any] = {"mode": mode, "expected": "" if expected_version is None else int(expected_version),
                                   "layout": LAYOUT_VERSION}  # (a new record marks the prefix's key layout)
        keys = [self.keys.run(rid)]
        if fence is not None:
            keys.append(fence.key)
            options["token"] = fence.token
        guard = ctx.guard(rid) if ctx is not None and fence is not None and mode == "save" else None
        if guard is not None:  # a cancel or pause since the tick last looked must stand
            options["control"] = [guard[0], "1" if guard[1] else "0"]
        if mode == "create" and ctx is not None and ctx.count_started and ctx.run_id == rid:
            options["started"] = "1"
        if mode == "save" and ctx is not None and ctx.moves(rid):
            options["clear"] = "1"  # a tick's save that lands moves the run: its failure row ends
        if own and mode == "save" and ctx is not None and ctx.applying:
            # the inbox events this save commits leave the inbox with it
            options["done"], ctx.applying = list(ctx.applying), []
            if ctx.applying_hist:  # (the resume latency: observed only if this save lands)
                options["hist"], ctx.applying_hist = dict(ctx.applying_hist), {}
        return keys, [self.prefix, rid, json.dumps(options), doc, json.dumps(fields)], fields

    def _write(self, run: RunState, mode: str, expected_version: Optional[int]) -> list:
        rid = str(run.run_id or "")
        if not rid:
            raise PayloadError("RunState.run_id must be non-empty")
        ctx = current()
        own = ctx is not None and ctx.run_id == rid and ctx.fence(rid) is not None
        keys, args, fields = self._script_args(run, mode, expected_version, ctx, own)
        script = self._save_script
        if own and mode == "save" and expected_version is None and ctx is not None:
            # The tick's own run: the save rides the next round trip the tick makes anyway
            # (before its next node runs, any message it sends, or its lease release).
            moves = ctx.moves(rid)

            def landed(reply: Any) -> None:
                refused(rid, reply, None)
                ctx.moved = ctx.moved or moves
                for then in queued.on_landed:
                    then()

            write = ctx.queue.add(self._r, lambda target: scripts.call_in(target, script, keys, args), landed,
                                  commit=True)
            queued = ctx.queued_save = QueuedSave(write, args, fields["updated"])
            ctx.confirm((fields["status"], fields["paused"] == "1"))
            ctx.last_saved_updated = fields["updated"]
            return [1, 0]
        reply = scripts.settle(self._sent_before(lambda t: scripts.call_in(t, script, keys, args)),
                               script, keys, args)
        if ctx is not None and ctx.fence(rid) is not None and int(reply[0]) == -4:
            ctx.controlled.add(rid)  # (a child ticked inline was cancelled or paused)
        refused(rid, reply, expected_version)
        if ctx is not None and int(reply[0]) == 1:
            self._confirmed(ctx, rid, fields)
            ctx.moved = ctx.moved or (rid == ctx.run_id and mode == "save" and ctx.moves(rid))
        return reply

    @staticmethod
    def _confirmed(ctx: TickContext, rid: str, fields: dict[str, Any]) -> None:
        """Note what a write of a leased run stored (its next writes check it)."""
        control = (fields["status"], fields["paused"] == "1")
        if rid == ctx.run_id:
            ctx.confirm(control)
            ctx.last_saved_updated = fields["updated"]
        elif ctx.fence(rid) is not None:
            ctx.controls[rid] = control

    def save(self, run: RunState, expected_version: Optional[int] = None) -> int:
        """Write ``run`` and its index entries atomically; return its new version.

        Inside a tick, a save of the tick's own leased run is queued to ride the tick's
        next round trip; it then returns 0 and a refusal is raised there.
        ``expected_version`` turns the save into compare-and-set (a missing run has
        version 0). Nothing is written when any check fails.

        Raises:
            LeaseLostError: the fence's lease key no longer holds our token.
            RunControlledError: under the lease, the run was cancelled, paused or
                resumed by someone else since the tick last confirmed it.
            VersionConflictError: the stored version differs from ``expected_version``.
            PayloadError: the run is not JSON, is over ``max_record_bytes``, or
                has an unparseable ``waiting.until``.
            StoreUnavailableError: Redis cannot be reached.
        """
        return int(self._write(run, "save", expected_version)[1])

    def save_in(self, pipe: Any, run: RunState) -> None:
        """Queue an unfenced save of ``run`` on ``pipe`` (bulk loads: many runs, one round trip).

        Raises:
            PayloadError: as ``save`` (the reply, checked by nobody, is the caller's).
        """
        keys, args, _ = self._script_args(run, "save", None, None, own=False)
        scripts.call_in(pipe, self._save_script, keys, args)

    def create_if_absent(self, run: RunState) -> Tuple[RunState, bool]:
        """Create ``run`` unless its id exists (one script: check and write).

        Returns ``(run, True)`` when created, ``(existing, False)`` when a run with the
        same creation identity exists. In a start's tick (a reserved lease), the create
        is queued behind the lease's acquire and sent before the first node runs.

        Raises:
            RunIdentityConflict: the id is taken by a run with another identity.
            CorruptRunError: the id's key holds garbage.
            LeaseLostError, PayloadError, StoreUnavailableError: as ``save``.
        """
        ctx = current()
        rid = str(run.run_id or "")
        if ctx is not None and ctx.run_id == rid and ctx.queued_create is None and ctx.reserved:
            self._queue_create(ctx, run)
            return run, True
        reply = self._write(run, "create", None)
        if int(reply[0]) == 1:
            if ctx is not None and ctx.run_id == rid:
                ctx.created, ctx.created_run = True, run
                if ctx.on_created is not None:
                    ctx.on_created()
            return run, True
        existing = decode(rid, reply[2])
        verify_run_identity(existing, run)
        return existing, False

    def _queue_create(self, ctx: TickContext, run: RunState) -> None:
        """Queue the create of a start's run behind its reserved lease. The create is a
        commit: it is sent before the first node runs. If the run exists after all (a
        redelivered start), the script drops the lease, so every write queued behind it
        is refused, and ``RunExistsError`` (carrying the stored run) stops the tick."""
        rid = str(run.run_id)
        keys, args, fields = self._script_args(run, "create", None, ctx, own=False)
        options = json.loads(args[2])
        options["drop_lease"] = "1"
        args[2] = json.dumps(options)
        script = self._save_script

        def created(reply: Any) -> None:
            code = int(reply[0])
            if code == 0:
                raise RunExistsError(rid, decode(rid, reply[2]))
            refused(rid, reply, None)
            ctx.created = True
            if ctx.on_created is not None:
                ctx.on_created()

        ctx.queued_create = ctx.queue.add(self._r, lambda target: scripts.call_in(target, script, keys, args),
                                          created, commit=True)
        ctx.created_run = run
        ctx.confirm((fields["status"], fields["paused"] == "1"))
        ctx.last_saved_updated = fields["updated"]

    def delete(self, run_id: str) -> bool:
        """Remove a run, its index entries, its failure notes and its trace context; True if it existed.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        rid = str(run_id or "")
        if not rid:
            return False
        k = self.keys
        script, keys, args = self._delete_script, [k.run(rid), k.attempts(rid), k.unknown(rid), k.backoff(rid),
                                                  k.trace(rid)], [self.prefix, rid]
        return bool(scripts.settle(self._sent_before(lambda t: scripts.call_in(t, script, keys, args)),
                                   script, keys, args))

    # --- reads -----------------------------------------------------------------------

    def load(self, run_id: str) -> Optional[RunState]:
        """The stored run, or None when no run has this id (like the built-in stores).

        Raises:
            CorruptRunError: the record exists but cannot be decoded.
            StoreUnavailableError: Redis cannot be reached.
        """
        rid = str(run_id or "")
        if not rid:
            return None
        ctx = current()
        if ctx is not None:
            handed = ctx.take_handoff(rid)  # the tick's own read of this run, under its lease
            if handed is not None:
                return handed
        try:
            raw = self._sent_before(self.read_op(rid))
        except (redis.exceptions.ResponseError, UnicodeDecodeError) as exc:  # WRONGTYPE, or not UTF-8
            raise CorruptRunError(rid, str(exc)) from exc
        run = self.from_read(rid, raw)
        if run is not None and ctx is not None and rid != ctx.run_id and ctx.fence(rid) is not None:
            ctx.controls[rid] = control_of(run)  # a child ticked inline: its saves check this
        return run

    def read_op(self, run_id: str) -> Callable[[Any], Any]:
        """``load`` as a pipeline step, for callers that batch it with other reads."""
        key = self.keys.run(str(run_id))
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
        return decode(run_id, doc)

    def load_with_version(self, run_id: str) -> Tuple[Optional[RunState], Optional[int]]:
        """``(run, version)`` read together, for compare-and-set loops.

        Raises:
            CorruptRunError, StoreUnavailableError: as ``load``.
        """
        rid = str(run_id or "")
        try:
            doc, version = self._sent_before(self.read_op(rid))
        except (redis.exceptions.ResponseError, UnicodeDecodeError) as exc:
            raise CorruptRunError(rid, str(exc)) from exc
        if doc is None and version is None:
            return None, None
        return decode(rid, doc), int(version or 0)

    def get_version(self, run_id: str) -> Optional[int]:
        """The run's version (1 after the first save), or None if it does not exist.

        Raises:
            CorruptRunError: the key holds a non-hash value.
            StoreUnavailableError: Redis cannot be reached.
        """
        rid = str(run_id or "")
        try:
            v = self._sent_before(lambda c: c.hget(self.keys.run(rid), "v"))
        except redis.exceptions.ResponseError as exc:
            raise CorruptRunError(rid, str(exc)) from exc
        return None if v is None else int(v)

    def probe_control(self, run_id: str) -> Optional[tuple[str, bool]]:
        """Cheap ``(status, paused)`` read for the Runtime's external-control probe.

        Under the run's lease, the answer the tick confirmed within ``control_ttl_s``
        is given without a read; the next save checks it in Redis.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        rid = str(run_id or "")
        if not rid:
            return None
        ctx = current()
        if ctx is not None and ctx.run_id == rid and ctx.fence(rid) is not None:
            confirmed = ctx.fresh_control(self._control_ttl_s)
            if confirmed is not None:
                return confirmed
        try:
            status, paused = self._sent_before(lambda c: c.hmget(self.keys.run(rid), ["status", "paused"]))
        except redis.exceptions.ResponseError:
            return None  # corrupt: let the runtime full-load and see the error
        if status is None or paused is None:
            return None
        return str(status), paused == "1"
