"""The driver: one object per process that wires the Runtime, the stores, the
coordination state and a dispatcher together, and offers the caller-side
operations (start a run, accept an event, wait for a run to settle).

The tick path itself lives in ``tick.py`` and the sweep in ``sweep.py``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import logging
import time
import uuid
from typing import Any, Callable

from abstractruntime import EffectType, Runtime, RunState, RunStatus, WaitReason, WorkflowSpec
from abstractruntime.scheduler.registry import WorkflowRegistry

from .batch import collecting
from .config import Settings
from .coordination import Coordination, open_coordination
from .dispatch import Dispatcher
from .errors import (
    RunNotWaitingError,
    RunWaitTimeout,
    UnknownRunError,
    UnknownWorkflowError,
    WaitKeyMismatchError,
)
from .inbox import Event, RedisInbox, new_event_id
from .lease import Lease, LeaseKeeper, RedisLeases, current_fence
from .logguard import import_upstream_utils
from .marks import RunMarks
from .payloads import check_object, check_run_id, check_start_vars
from .registry import require_workflow
from .signals import Notices
from .stores import open_stores, require_queryable
from .stores.known import learn
from .stores.redis_ledger import RedisLedgerStore
from .stores.redis_runs import RedisRunStore, control_of
from .tick import TERMINAL, TickOutcome, tick_run

log = logging.getLogger(__name__)

#: Runs that EMIT_EVENT resumed during this tick; the tick path sends them ticks.
_listeners: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "abstractruntime_celery_listeners", default=None
)
#: Wait reasons an event is addressed to; for others, an early event waits in the inbox.
EVENT_WAITS = (WaitReason.EVENT, WaitReason.USER, WaitReason.JOB)


class Driver:
    """Everything one process needs to drive runs. Cheap to build; holds no threads
    until a lease is first held (the lease keeper)."""

    def __init__(self, settings: Settings, registry: WorkflowRegistry, dispatcher: Dispatcher | None = None,
                 *, coordination: Coordination | None = None, runtime: Runtime | None = None,
                 broker_url: str | None = None, runtime_kwargs: dict[str, Any] | None = None) -> None:
        """Use ``runtime`` as given, or build one on the stores of ``settings.store_url``
        with ``runtime_kwargs`` (effect handlers, artifact store, effect policy, ...).

        Raises:
            ConfigError: a store or coordination URL is malformed.
            TypeError: the run store is not a QueryableRunStore.
        """
        import_upstream_utils()  # now, keeping the host's log handlers (AbstractCore would clear them)
        self.settings = settings
        self.registry = registry
        self.coord = coordination or open_coordination(
            settings.resolved_coord_url(broker_url), settings.key_prefix, settings.lease_ttl_s
        )
        self.keeper = LeaseKeeper(self.coord.leases)
        self.marks = RunMarks(self.coord.client, settings.key_prefix)
        self.notices = Notices(self.coord.client, settings.key_prefix)
        if runtime is None:
            run_store, ledger_store = open_stores(
                settings.store_url, prefix=settings.key_prefix, fence=current_fence,
                still_ours=self.coord.leases.holds, control_ttl_s=settings.control_ttl_s,
            )
            runtime = Runtime(run_store=run_store, ledger_store=ledger_store, workflow_registry=registry,
                              **(runtime_kwargs or {}))
        self.runtime = runtime
        require_queryable(self.runtime.run_store)
        self.run_store: Any = self.runtime.run_store
        self._wrap_builtin_effects()
        self.dispatcher: Dispatcher = dispatcher if dispatcher is not None else _NullDispatcher()

    # --- wiring ----------------------------------------------------------------------

    def _wrap_builtin_effects(self) -> None:
        """Two built-in effects need the driver's help on a fleet.

        EMIT_EVENT resumes listener runs with ``max_steps=0`` and leaves them RUNNING;
        the list is only in the effect's result, so we catch it and the tick path
        ticks them (without this, the sweep's orphan pass would, later).

        START_SUBWORKFLOW without a ``run_id`` makes a fresh child id each time it
        runs, so a spawn node re-run after a killed worker would start a second
        child. We give it a deterministic id (parent, node, effect sequence): a
        re-run finds the child the first attempt created (``create_if_absent``).
        """
        handlers = getattr(self.runtime, "_handlers", None)
        if not isinstance(handlers, dict):
            return
        emit = handlers.get(EffectType.EMIT_EVENT)
        spawn = handlers.get(EffectType.START_SUBWORKFLOW)

        def emit_event(run: RunState, effect: Any, default_next_node: Any) -> Any:
            outcome = emit(run, effect, default_next_node)
            delivered = (getattr(outcome, "result", None) or {}).get("delivered_to") or []
            bucket = _listeners.get()
            if bucket is not None:
                bucket.extend(str(r) for r in delivered)
            return outcome

        def start_subworkflow(run: RunState, effect: Any, default_next_node: Any) -> Any:
            if isinstance(effect.payload, dict) and not effect.payload.get("run_id"):
                payload = dict(effect.payload, run_id=child_run_id(run))
                effect = dataclasses.replace(effect, payload=payload)
            return spawn(run, effect, default_next_node)

        if emit is not None:
            handlers[EffectType.EMIT_EVENT] = emit_event
        if spawn is not None:
            handlers[EffectType.START_SUBWORKFLOW] = start_subworkflow

    def take_listeners(self) -> list[str]:
        bucket = _listeners.get()
        if not bucket:
            return []
        out = list(dict.fromkeys(bucket))
        bucket.clear()
        return out

    def begin_tick(self, run_id: str, *, fresh: bool = False
                   ) -> tuple[Lease | None, Callable[[], tuple[list[Event], RunState | None]]]:
        """Take the run's lease; on Redis, read its inbox (and the run itself and whether
        its ledger has completed steps, when the stores share the connection) in the
        same round trip.

        Returns the lease (None when another process holds it) and a function that
        decodes the reads and, inside ``knowing()``, notes what the tick now knows of
        the run (``stores/known.py``); call it only while holding the lease (it may
        raise CorruptRunError, and the caller must still release).

        ``fresh``: ``run_id`` was just made up in this process, so there is nothing to
        read and nobody else can hold its lease; with the Redis stores the lease is then
        reserved (queued ahead of the tick's first write) with no round trip at all.
        Call it inside ``batch.collecting()`` and ``knowing()``.
        """
        leases, inbox, store = self.coord.leases, self.coord.inbox, self.run_store
        if not (isinstance(leases, RedisLeases) and isinstance(inbox, RedisInbox)):
            lease = leases.acquire(run_id)
            return lease, lambda: (inbox.pending(run_id), store.load(run_id))
        reads = [inbox.read_op(run_id)]
        shared = isinstance(store, RedisRunStore) and store.shares_connection(leases.client)
        if shared:
            reads.append(store.read_op(run_id))
        ledger = self.runtime.ledger_store
        ledger_shared = shared and isinstance(ledger, RedisLedgerStore) and ledger.shares_connection(leases.client)
        if fresh and ledger_shared:
            reserved = leases.reserve(run_id)

            def nothing_yet() -> tuple[list[Event], RunState | None]:
                entry = learn(run_id)
                if entry is not None:
                    entry.done_empty = entry.fresh = True
                return [], None

            return reserved, nothing_yet
        if ledger_shared:
            done_key = ledger.done_key(run_id)
            reads.append(lambda pipe: pipe.exists(done_key))
        read_at = time.monotonic()  # the reads are at least this fresh
        lease, results = leases.acquire_reading(run_id, reads)

        def unpack() -> tuple[list[Event], RunState | None]:
            if isinstance(results[0], Exception):
                raise results[0]
            run = store.from_read(run_id, results[1]) if shared else store.load(run_id)
            entry = learn(run_id) if shared else None
            if entry is not None:
                if run is not None:
                    entry.confirm(control_of(run), at=read_at)
                entry.done_empty = ledger_shared and results[2] == 0
            return inbox.parse(results[0]), run

        return lease, unpack

    def workflow_for(self, run: RunState) -> WorkflowSpec:
        """Raises UnknownWorkflowError naming the run when this process lacks its workflow."""
        return require_workflow(self.registry, run.workflow_id, run.run_id)

    # --- the tick path -------------------------------------------------------------------

    def tick(self, run_id: str, reason: str = "tick", max_steps: int | None = None,
             create: Callable[[], Any] | None = None, fresh: bool = False) -> TickOutcome:
        """Advance ``run_id`` under its lease (see tick.py); ``create`` makes the run
        first, under the same lease, if it is not there.

        Raises:
            UnknownRunError: no such run (and no ``create``).
            Exception: a node handler's error (counted; the run stays RUNNING and is retried),
                or ``create``'s own error.
        """
        reset = _listeners.set([])
        try:
            return tick_run(self, run_id, reason=reason, max_steps=max_steps, create=create, fresh=fresh)
        finally:
            _listeners.reset(reset)

    def fail_run(self, run_id: str, error: str) -> None:
        """Mark a run FAILED (fenced when called under its lease) and wake its parent."""
        run = self.run_store.load(run_id)
        if run is None or run.status in TERMINAL:
            return
        run.status = RunStatus.FAILED
        run.error = error
        run.waiting = None
        from datetime import datetime, timezone

        run.updated_at = datetime.now(timezone.utc).isoformat()
        self.run_store.save(run)
        if run.parent_run_id:
            self.dispatcher.tick(run.parent_run_id, reason="child")

    # --- caller side -----------------------------------------------------------------------

    def _start_kwargs(self, workflow: WorkflowSpec | str, vars: dict[str, Any] | None, run_id: str | None,
                      actor_id: str | None, session_id: str | None) -> dict[str, Any]:
        """``Runtime.start`` arguments for a new run, checked (raises as ``start_run``)."""
        spec = workflow if isinstance(workflow, WorkflowSpec) else require_workflow(self.registry, workflow)
        check_start_vars(vars if vars is not None else {}, what=f"vars of a new '{spec.workflow_id}' run",
                     limit=self.settings.max_payload_bytes)
        run_id = check_run_id(run_id) if run_id is not None else uuid.uuid4().hex
        kwargs: dict[str, Any] = {"workflow": spec, "vars": vars, "actor_id": actor_id, "run_id": run_id}
        if session_id is not None:
            kwargs["session_id"] = session_id
        return kwargs

    def start_run(self, workflow: WorkflowSpec | str, *, vars: dict[str, Any] | None = None,
                  run_id: str | None = None, actor_id: str | None = None, session_id: str | None = None,
                  dispatch: bool = True) -> str:
        """Create a RUNNING run and (by default) send its first tick.

        Raises:
            UnknownWorkflowError: ``workflow`` is an id this process does not know.
            PayloadError: ``vars`` is not a JSON object under ``max_payload_bytes``, or ``run_id`` is malformed.
        """
        run_id = self.runtime.start(**self._start_kwargs(workflow, vars, run_id, actor_id, session_id))
        self.coord.stats.incr("runs_started")
        if dispatch:
            self.dispatcher.tick(run_id, reason="start")
        return run_id

    def start_and_tick(self, workflow: WorkflowSpec | str, *, vars: dict[str, Any] | None = None,
                       run_id: str | None = None, actor_id: str | None = None,
                       session_id: str | None = None, fresh: bool | None = None) -> tuple[str, TickOutcome]:
        """Create a run and tick it here, under one lease: what a start message does on a
        worker. The lease is taken first, so the create rides the tick's round trips.
        With an explicit ``run_id`` that exists already, the run is just ticked.
        ``fresh`` (default: no ``run_id`` was given) says the id was made up here and
        now: the lease and the create then ride the tick's first write.

        Raises:
            UnknownWorkflowError, PayloadError: as ``start_run`` (before anything is written).
            RunIdentityConflict: ``run_id`` names a run with another creation identity.
            Exception: a node handler's error, as ``tick``.
        """
        kwargs = self._start_kwargs(workflow, vars, run_id, actor_id, session_id)

        def create() -> Any:
            self.coord.stats.incr("runs_started")
            return self.runtime.start(**kwargs)

        fresh = run_id is None if fresh is None else fresh
        return kwargs["run_id"], self.tick(kwargs["run_id"], reason="start", create=create, fresh=fresh)

    def load(self, run_id: str) -> RunState:
        """Raises UnknownRunError if the run does not exist; CorruptRunError if its record is garbage."""
        run = self.run_store.load(check_run_id(run_id))
        if run is None:
            raise UnknownRunError(run_id)
        return run

    def accept_event(self, run_id: str, wait_key: str | None, payload: dict[str, Any], *,
                     dispatch: bool = True) -> Event:
        """Validate an event, store it durably in the run's inbox, and send a resume message.

        An event for a run that has not reached its wait yet stays in the inbox
        until it does. Returns the stored event (its ``event_id`` names it).

        Raises:
            PayloadError: the run id or payload is malformed, not JSON, or too large.
            UnknownRunError: no such run.
            UnknownWorkflowError: this process's registry lacks the run's workflow.
            RunNotWaitingError: the run has ended.
            WaitKeyMismatchError: the run waits on an event under another key.
        """
        check_object(payload, what=f"payload for run '{run_id}'", limit=self.settings.max_payload_bytes)
        if wait_key is not None and not isinstance(wait_key, str):
            raise WaitKeyMismatchError(run_id, None, repr(wait_key))
        run = self.load(run_id)
        if run.status in TERMINAL:
            raise RunNotWaitingError(run_id, run.status.value)
        if self.registry.get(run.workflow_id) is None:
            raise UnknownWorkflowError(run.workflow_id, run_id)
        waiting = run.waiting
        if (run.status == RunStatus.WAITING and waiting is not None and waiting.reason in EVENT_WAITS
                and wait_key is not None and waiting.wait_key != wait_key):
            raise WaitKeyMismatchError(run_id, waiting.wait_key, wait_key)
        event = Event(event_id=new_event_id(), run_id=run_id, wait_key=wait_key,
                      payload=payload, accepted_at=time.time())
        with collecting() as ops:  # the counter rides the same round trip as the event
            self.coord.stats.incr("events_accepted")
        self.coord.inbox.put(event, ops)
        if dispatch:
            self.dispatcher.tick(run_id, reason="event", event_id=event.event_id)
        return event

    def event_applied(self, event: Event) -> bool:
        return not self.coord.inbox.has(event.run_id, event.event_id)

    def settled(self, run: RunState) -> bool:
        """A run is settled when it waits or has ended and no tick holds it."""
        return run.status != RunStatus.RUNNING and not self.coord.leases.is_held(run.run_id)

    def wait_for(self, run_id: str, *, timeout: float = 30.0,
                 until: Callable[[RunState], bool] | None = None, event: Event | None = None) -> RunState:
        """Poll the store until ``until(run)`` holds (default: settled) and ``event`` is applied.

        Raises:
            RunWaitTimeout: the condition did not hold within ``timeout`` seconds.
            UnknownRunError: the run does not exist.
        """
        check = until or self.settled
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            run = self.load(run_id)
            if (event is None or self.event_applied(event)) and check(run):
                return run
            if time.monotonic() >= deadline:
                raise RunWaitTimeout(run_id, timeout, run.status.value)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)


def child_run_id(parent: RunState) -> str:
    """A child id that is the same each time the parent's current effect is executed."""
    runtime_ns = parent.vars.get("_runtime") if isinstance(parent.vars, dict) else None
    seq = runtime_ns.get("effect_seq", 0) if isinstance(runtime_ns, dict) else 0
    digest = hashlib.sha256(f"{parent.run_id}|{parent.current_node}|{seq}".encode()).hexdigest()
    return f"sub-{digest[:32]}"


class _NullDispatcher:
    """Until a dispatcher is wired in, ticks are left to the sweep (the store is the truth)."""

    min_eta_s = 0.0

    def tick(self, run_id: str, *, reason: str = "tick", eta: Any = None, event_id: str | None = None) -> None:
        log.debug("no dispatcher: tick of %s (%s) left to the sweep", run_id, reason)
