"""The driver: what one process needs to drive runs, built in one place (``build``),
and the caller-side operations (start a run, accept an event, wait for a run).

``build`` is the composition root: the Celery tasks, the ``Scheduler`` and
``create_scheduled_runtime`` all get their stores, clients, leases, inbox,
timers and tick from it, and nothing else opens a store or a Redis client.
The tick itself is in ``tick.py``, control actions in ``control.py``, the sweep
in ``sweep.py``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable, Optional, Protocol

from abstractruntime import Runtime, RunState, RunStatus, WorkflowSpec

from .config import Settings
from .context import TickContext, entered
from .control import Control
from .coord import Coordination, open_coordination
from .errors import (
    ConfigError,
    DispatchError,
    DuplicateDeliveryError,
    PayloadError,
    RunBusyError,
    RunNotWaitingError,
    RunPausedError,
    RunWaitTimeout,
    UnknownRunError,
    UnknownWorkflowError,
    WaitKeyMismatchError,
)
from .coord.local import LocalInbox
from .inbox import Delivery, Event, OneAnswer, RunMovedError, new_event_id
from .identity import identity_of, redis_place
from .keys import Keys
from .lease import LeaseKeeper, wait_for_lease
from .payloads import check_new_run_id, check_object, check_run_id, check_start_vars, check_wait_key, payload_bytes
from .redact import redact_url
from .registry import WorkflowRegistry, lookup_workflow, require_workflow
from .runstate import EVENT_WAITS, TERMINAL, is_pause_wait, paused, takes
from .stores import is_redis_url, open_stores, require_queryable
from .stores.fenced import FencedRunStore
from .stores.redis import RedisRunStore
from .tick import Start, Ticker, TickOutcome

log = logging.getLogger(__name__)

#: Wait keys only the driver gives (a child's result, the pause wait): no event may use one.
RESERVED_KEY_PREFIXES = ("subworkflow:", "pause:")

#: An event id a caller may choose (``new_event_id`` makes them).
_EVENT_ID = re.compile(r"[0-9a-f]{32}")

#: How often ``accept_event`` checks a run again that moved on while its answer was stored.
ANSWER_TRIES = 20


class Dispatcher(Protocol):
    """How a tick gets to a worker: a Celery message, or the embedded in-process queue."""

    #: Shortest delay the transport accepts as an ETA (see timers.MIN_ETA_S).
    min_eta_s: float

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None,
             message_id: Optional[str] = None) -> None: ...


class NullDispatcher:
    """Until a dispatcher is wired in, ticks are left to the sweep (the store is the truth)."""

    min_eta_s = 0.0

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None,
             message_id: Optional[str] = None) -> None:
        log.debug("no dispatcher: tick of %s (%s) left to the sweep", run_id, reason)


@dataclass
class Driver:
    """Everything one process needs to drive runs (see ``build``)."""

    settings: Settings
    registry: WorkflowRegistry
    runtime: Runtime
    coord: Coordination
    keeper: LeaseKeeper
    dispatcher: Dispatcher
    ticker: Ticker
    control: Control
    #: Events answer only EVENT/USER/JOB waits under their exact key (``wait_key_mode``).
    strict: bool
    #: The store this driver reads, as its tick messages name it (``identity.py``).
    identity: str = ""

    @property
    def run_store(self) -> Any:
        return self.runtime.run_store

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None,
             message_id: Optional[str] = None) -> None:
        self.dispatcher.send(run_id, reason, eta, message_id)

    # --- ticks ---------------------------------------------------------------------

    def tick(self, run_id: str, reason: str = "tick", max_steps: Optional[int] = None,
             follow_up: bool = True, message_id: Optional[str] = None) -> TickOutcome:
        """Advance ``run_id`` under its lease (see tick.py); ``message_id``: the id of the
        message delivered, if any.

        Raises:
            PayloadError: ``run_id`` is not a run id.
            UnknownRunError: no such run.
            RegistryError: the registry's lookup of the run's workflow raised (nothing moved).
            Exception: a node handler's error (counted; the run stays RUNNING and is retried).
        """
        return self.ticker.tick(check_run_id(run_id), reason=reason, max_steps=max_steps, follow_up=follow_up,
                                message_id=message_id)

    # --- starting runs ---------------------------------------------------------------

    def start_kwargs(self, workflow: WorkflowSpec | str, vars: Optional[dict[str, Any]], run_id: Optional[str],
                     actor_id: Optional[str], session_id: Optional[str]) -> dict[str, Any]:
        """``Runtime.start`` arguments for a new run, checked (raises as ``start_run``)."""
        spec = workflow if isinstance(workflow, WorkflowSpec) else require_workflow(self.registry, workflow)
        check_start_vars(vars if vars is not None else {}, what=f"vars of a new '{spec.workflow_id}' run",
                     limit=self.settings.max_payload_bytes)
        run_id = check_new_run_id(run_id) if run_id is not None else uuid.uuid4().hex
        kwargs: dict[str, Any] = {"workflow": spec, "vars": vars, "actor_id": actor_id, "run_id": run_id}
        if session_id is not None:
            kwargs["session_id"] = session_id
        return kwargs

    def start_run(self, workflow: WorkflowSpec | str, *, vars: Optional[dict[str, Any]] = None,
                  run_id: Optional[str] = None, actor_id: Optional[str] = None,
                  session_id: Optional[str] = None, dispatch: bool = True,
                  on_created: Optional[Callable[[], None]] = None) -> str:
        """Create a RUNNING run (or find the one with this ``run_id``) and, by default,
        send its first tick. ``runs_started`` counts only a run created here, and only
        then is ``on_created`` called (a webhook answers "started" or "duplicate" by it).

        Raises:
            UnknownWorkflowError: ``workflow`` is an id this process does not know.
            RegistryError: the registry's lookup of ``workflow`` raised.
            PayloadError: ``vars`` is not a JSON object under ``max_payload_bytes``, or
                ``run_id`` is malformed or in the children's id space.
            RunIdentityConflict: ``run_id`` names a run with another creation identity.
            DispatchError: the run is stored but its tick could not be sent (names the run:
                the sweep ticks it after ``orphan_grace_s``; calling again with that ``run_id``
                finds it and sends the tick).
        """
        kwargs = self.start_kwargs(workflow, vars, run_id, actor_id, session_id)
        if self.ticker.shared:  # the create counts it, in its own step: no round trip of its own
            ctx = TickContext(kwargs["run_id"], count_started=True, on_created=on_created)
        else:
            def created() -> None:
                self.coord.stats.incr("runs_started")
                if on_created is not None:
                    on_created()

            ctx = TickContext(kwargs["run_id"], on_created=created)
        with entered(ctx):
            self.runtime.start(**kwargs)
            ctx.queue.flush()
        if dispatch:
            self.send(kwargs["run_id"], "start")
        return str(kwargs["run_id"])

    def start_and_tick(self, workflow: WorkflowSpec | str, *, vars: Optional[dict[str, Any]] = None,
                       run_id: Optional[str] = None, actor_id: Optional[str] = None,
                       session_id: Optional[str] = None) -> tuple[str, TickOutcome]:
        """Create a run and tick it here, under one lease: what a start message does on a
        worker. Delivered again, it ticks the run the first delivery created.

        Raises:
            UnknownWorkflowError, PayloadError, RunIdentityConflict: as ``start_run``.
            Exception: a node handler's error, as ``tick``.
        """
        kwargs = self.start_kwargs(workflow, vars, run_id, actor_id, session_id)
        rid = str(kwargs["run_id"])
        return rid, self.ticker.tick(rid, reason="start", start=Start(kwargs))

    # --- reading -----------------------------------------------------------------------

    def load(self, run_id: str) -> RunState:
        """Raises UnknownRunError if the run does not exist; CorruptRunError if its record is
        garbage; PayloadError if ``run_id`` is not a run id."""
        run = self.run_store.load(check_run_id(run_id))
        if run is None:
            raise UnknownRunError(run_id)
        return run

    # --- events ------------------------------------------------------------------------

    def accept_event(self, run_id: str, wait_key: Optional[str], payload: dict[str, Any], *,
                     dispatch: bool = True, answering: Optional[str] = None,
                     delivery: Optional[Delivery] = None, event_id: Optional[str] = None) -> Event:
        """Validate an event, store it durably in the run's inbox, and send the run a tick.

        An event for a run that has not reached its wait yet stays in the inbox until it
        does. ``answering`` (``respond``): the ``updated_at`` of the waiting run the caller
        saw; the event answers that wait only, once, and is refused if the run moved on.
        Returns the stored event (its ``event_id`` names it). ``delivery`` (webhooks): store
        the event only if no delivery with its key was stored, in the same atomic step;
        ``event_id``: the id the caller chose for it (32 hex digits; default a new one).

        Raises:
            DuplicateDeliveryError: ``delivery`` was stored before; nothing was stored now.
            PayloadError: the run id, wait key or payload is malformed, not JSON, or too large;
                ``InboxFullError`` (a PayloadError): the run's inbox is at its limit.
            UnknownRunError: no such run.
            UnknownWorkflowError: this process's registry lacks the run's workflow.
            RegistryError: the registry's lookup of the run's workflow raised.
            RunNotWaitingError: the run has ended, or (strict) waits on something no event may
                answer, or (seed mode, ``answering``) its wait already has its answer or the
                run left it.
            RunPausedError: the run is paused.
            WaitKeyMismatchError: the run waits on an event under another key, or (strict) no key was given.
            RunBusyError: the run moved on under every one of ``ANSWER_TRIES`` checks, or (stores
                without versions, ``answering``) a tick held it for ``control_timeout_s``.

        A broker that refuses the event's tick raises nothing: the event is stored, so
        the call succeeded; a warning is logged and the sweep re-sends the tick after
        ``event_redeliver_s`` (a caller that retried would store a second answer).
        """
        check_run_id(run_id)
        what = f"event for run '{run_id}'"
        body = payload_bytes(check_object(payload, what=what, limit=self.settings.max_payload_bytes))
        if wait_key is not None and not isinstance(wait_key, str):
            raise WaitKeyMismatchError(run_id, None, repr(wait_key)[:80])
        if wait_key is not None:
            check_wait_key(wait_key, limit=self.settings.max_wait_key_bytes, what=what)
        if event_id is not None and not (isinstance(event_id, str) and _EVENT_ID.fullmatch(event_id)):
            raise PayloadError(f"event_id must be 32 hex digits, got {event_id!r:.80}")
        event = Event(event_id=event_id or new_event_id(), run_id=run_id, wait_key=wait_key, accepted_at=time.time(),
                      strict=self.strict, size=len(body))
        if delivery is not None:  # a repeat of a delivery already stored is not checked against the run
            seen = self.coord.inbox.delivered(delivery.key)
            if seen is not None:
                raise DuplicateDeliveryError(delivery.key, seen)
        if answering is not None and not isinstance(self.run_store, RedisRunStore):
            self._answer_under_lease(event, body, answering, delivery)
        else:
            self._store_event(event, body, answering, delivery)
        if isinstance(self.coord.inbox, LocalInbox):
            self.coord.stats.incr("events_accepted")
        if dispatch:
            self._send_event_tick(event)
        return event

    def _send_event_tick(self, event: Event) -> None:
        """Send the tick of a stored event. The event is durable already, so a broker that
        refuses the message is not the caller's failure: an error here would invite a retry,
        and a retried event is a second answer. Logged and counted; the sweep re-sends the
        tick after ``event_redeliver_s``."""
        try:
            self.send(event.run_id, "event")
        except DispatchError as exc:
            self.coord.stats.incr("event_ticks_unsent")
            log.warning("event %s for run %s is stored, but its tick was not sent (%s); the sweep "
                        "re-sends it after event_redeliver_s", event.event_id, event.run_id, exc.cause)

    def _store_event(self, event: Event, body: bytes, answering: Optional[str],
                     delivery: Optional[Delivery] = None) -> None:
        """Check, then store; on Redis the store refuses an answer to a run whose version
        moved on since the check (``OneAnswer``), and the check runs again. Raises as
        ``accept_event``."""
        began, answered, run_id = time.monotonic(), False, event.run_id
        for _ in range(ANSWER_TRIES):
            run, version = self._load_versioned(run_id)
            answer = self._checked(run, event, answering, version)
            if answered and answer is None:  # it left the wait this event answered, and waits on none now
                raise RunNotWaitingError(run_id, run.status.value, "is not in the wait this event answers")
            answered = answer is not None
            try:
                self.coord.inbox.put(event, body, self._inbox_limits, answer=answer, delivery=delivery)
                return
            except RunMovedError:
                if answering is not None:
                    raise RunNotWaitingError(run_id, run.status.value,
                                             "moved on from the wait this event answers") from None
        raise RunBusyError(run_id, time.monotonic() - began)  # it kept moving on under us

    def _answer_under_lease(self, event: Event, body: bytes, answering: str,
                            delivery: Optional[Delivery] = None) -> None:
        """Stores without versions: the check and the put under the run's lease, so no tick
        commits between them. Raises as ``accept_event``."""
        run_id, leases = event.run_id, self.coord.leases
        lease = wait_for_lease(leases, run_id, self.settings.control_timeout_s)
        if lease is None:
            raise RunBusyError(run_id, self.settings.control_timeout_s)
        ctx = TickContext(run_id, fences={run_id: lease.fence})
        try:
            answer = self._checked(self.load(run_id), event, answering, None)
            if answer is not None:
                answer = replace(answer, lease=(lease.key, lease.token))
            self.coord.inbox.put(event, body, self._inbox_limits, answer=answer, delivery=delivery)
        except RunMovedError:
            raise RunNotWaitingError(run_id, "waiting", "moved on from the wait this event answers") from None
        finally:
            if leases.release(lease, ctx):  # a tick came while we held the lease
                self.send(run_id, "asked", None, ctx.next_id)

    @property
    def _inbox_limits(self) -> tuple[int, int]:
        return self.settings.max_inbox_events, self.settings.max_inbox_bytes

    def _checked(self, run: RunState, event: Event, answering: Optional[str],
                 version: Optional[int]) -> Optional[OneAnswer]:
        """Raises as ``accept_event`` if the run may not take ``event``; returns the store's
        guard for an answer to its wait."""
        self._check_can_take(run, event.wait_key)
        answer = self._one_answer(run, version, event, answering is not None)
        if answering is not None and (answer is None or (run.updated_at or "") != answering):
            raise RunNotWaitingError(run.run_id, run.status.value, "moved on from the wait this event answers")
        return answer

    def _load_versioned(self, run_id: str) -> tuple[RunState, Optional[int]]:
        """The run and (Redis store) the version it was read at. Raises as ``load``."""
        store = self.run_store
        if isinstance(store, RedisRunStore):
            run, version = store.load_with_version(run_id)
            if run is None:
                raise UnknownRunError(run_id)
            return run, version
        return self.load(run_id), None

    def _one_answer(self, run: RunState, version: Optional[int], event: Event,
                    current_wait: bool) -> Optional[OneAnswer]:
        """The seed's rule (embedded, and ``respond`` everywhere): a wait takes one answer,
        refused in the same atomic step that would store a second one, or one for a run that
        moved on since it was checked."""
        if (self.strict and not current_wait) or run.status != RunStatus.WAITING or run.waiting is None \
                or not takes(run, event):
            return None
        store = self.run_store
        run_key = store.run_key(run.run_id) if isinstance(store, RedisRunStore) else None
        return OneAnswer(run.waiting.wait_key or "", run_key, version)

    def _check_can_take(self, run: RunState, wait_key: Optional[str]) -> None:
        """Raises as ``accept_event`` for a run that may not get this event."""
        run_id = run.run_id
        if run.status in TERMINAL:
            raise RunNotWaitingError(run_id, run.status.value)
        if paused(run) or is_pause_wait(run):
            raise RunPausedError(run_id)
        if lookup_workflow(self.registry, run.workflow_id) is None:
            raise UnknownWorkflowError(run.workflow_id, run_id)
        waiting = run.waiting if run.status == RunStatus.WAITING else None
        if self.strict:
            if wait_key is None:
                raise WaitKeyMismatchError(run_id, waiting.wait_key if waiting else None, None)
            if wait_key.startswith(RESERVED_KEY_PREFIXES):
                raise RunNotWaitingError(run_id, run.status.value,
                                         f"cannot take an event under the driver's own key {wait_key[:60]!r}")
        if waiting is None:
            return  # RUNNING: an early event, kept until the run reaches its wait
        if waiting.reason in EVENT_WAITS and wait_key is not None and waiting.wait_key != wait_key:
            raise WaitKeyMismatchError(run_id, waiting.wait_key, wait_key)
        if self.strict and waiting.reason not in EVENT_WAITS and waiting.wait_key == wait_key:
            raise RunNotWaitingError(run_id, run.status.value,
                                     f"waits on {waiting.reason.value}, which no event may answer")

    def event_applied(self, event: Event) -> bool:
        return not self.coord.inbox.has(event.run_id, event.event_id)

    # --- waiting for a run --------------------------------------------------------------

    def settled(self, run: RunState) -> bool:
        """A run is settled when it waits or has ended and no tick holds it."""
        return run.status != RunStatus.RUNNING and not self.coord.leases.is_held(run.run_id)

    def snapshot(self, run_id: str, event: Optional[Event] = None) -> tuple[RunState, bool, bool]:
        """``(run, event applied, settled)`` read consistently: in one MULTI on a shared
        Redis (a tick's final save and its release are never split), else in the safe
        order (the event first, then the run, then the lease).

        Raises:
            UnknownRunError: no such run.
        """
        store, coord = self.run_store, self.coord
        if isinstance(store, RedisRunStore) and coord.client is not None and store.shares_connection(coord.client):
            pipe = coord.client.pipeline(transaction=True)
            store.read_op(check_run_id(run_id))(pipe)
            pipe.exists(coord.keys.lease(run_id))
            if event is not None:
                pipe.hexists(coord.keys.inbox(run_id), event.event_id)
            raw, held, *pending = pipe.execute()
            run = store.from_read(run_id, raw)
            if run is None:
                raise UnknownRunError(run_id)
            return run, not (pending and pending[0]), run.status != RunStatus.RUNNING and not held
        applied = event is None or self.event_applied(event)
        run = self.load(run_id)
        return run, applied, self.settled(run)

    def wait_for(self, run_id: str, *, timeout: float = 30.0,
                 until: Optional[Callable[[RunState], bool]] = None, event: Optional[Event] = None) -> RunState:
        """Poll until ``event`` (if any) is applied and ``until(run)`` holds (default: settled).

        Raises:
            RunWaitTimeout: the condition did not hold within ``timeout`` seconds.
            UnknownRunError: the run does not exist.
        """
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            run, applied, settled = self.snapshot(run_id, event)
            if applied and (until(run) if until is not None else settled):
                return run
            if time.monotonic() >= deadline:
                raise RunWaitTimeout(run_id, timeout, run.status.value)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)


def build(settings: Settings, registry: WorkflowRegistry, dispatcher: Optional[Dispatcher] = None, *,
          distributed: bool = False, broker_url: Optional[str] = None, runtime: Optional[Runtime] = None,
          run_store: Any = None, ledger_store: Any = None, runtime_kwargs: Optional[dict[str, Any]] = None,
          coordination: Optional[Coordination] = None) -> Driver:
    """Build the driver of this process: coordination, stores, Runtime, tick, control.

    ``runtime``: use it as given (the seed's ``Scheduler(runtime=...)``); else one is built
    on ``run_store``/``ledger_store`` or, by default, the stores of ``settings.store_url``.

    Raises:
        ConfigError: a store or coordination URL is malformed, the Redis store and the
            coordination Redis (or their key prefixes) differ, the prefix holds data of another key layout, or
            ``distributed`` with coordination that would live in this process only.
        StoreUnavailableError: a Redis cannot be reached.
        TypeError: the run store is not a QueryableRunStore.
    """
    from . import effects
    from .logguard import import_upstream_utils

    import_upstream_utils()  # now, keeping the host's log handlers (AbstractCore would clear them)
    keys = Keys(settings.key_prefix)
    coord_url = settings.resolved_coord_url(broker_url)
    given_store = runtime.run_store if runtime is not None else run_store
    _check_one_redis(settings, coord_url, given_store)
    _check_one_prefix(settings, given_store)
    if coordination is None and isinstance(given_store, RedisRunStore):
        # The store's Redis, however its URL is spelled (or with none in the settings: the
        # store checks each save against a lease in its own Redis, never an in-process one).
        label = coord_url if is_redis_url(coord_url) else "the given Redis run store's server"
        coordination = open_coordination(label, keys, settings.lease_ttl_s, client=given_store.client,
                                         lost_tick_after_s=settings.lost_tick_after_s)
    elif coordination is None and is_redis_url(coord_url) and given_store is None \
            and is_redis_url(settings.store_url):
        coord_url = settings.store_url
    in_process_broker = (broker_url or "").startswith("memory://")  # (kombu's: one process only)
    if distributed and coordination is None and coord_url == "memory://" and not in_process_broker:
        raise ConfigError(
            f"A distributed driver needs its leases, inboxes and timers in Redis, and neither the store "
            f"({redact_url(settings.store_url)}) nor the broker ({redact_url(broker_url or '') or 'none'}) is Redis: "
            "set coord_url (ABSTRACTRUNTIME_CELERY_COORD_URL) to redis://host:port/db, the same for every "
            "worker and caller (in-process ones would never see each other's events)")
    coord = coordination or open_coordination(coord_url, keys, settings.lease_ttl_s,
                                              lost_tick_after_s=settings.lost_tick_after_s)
    if runtime is None:
        runtime = _runtime(settings, registry, coord, run_store, ledger_store, distributed, runtime_kwargs or {})
    require_queryable(runtime.run_store)
    keeper = LeaseKeeper(coord.leases)
    dispatcher = dispatcher if dispatcher is not None else NullDispatcher()
    effects.install(runtime, coord.leases, keeper)
    control = Control(runtime, coord.leases, coord.inbox, lambda r, why, mid: dispatcher.send(r, why, None, mid),
                      settings.control_timeout_s, marks=coord.marks)
    strict = settings.wait_key_mode == "strict" or (settings.wait_key_mode == "auto" and distributed)
    ticker = Ticker(settings=settings, runtime=runtime, registry=registry, coord=coord, keeper=keeper,
                    send=lambda r, why, eta, mid: dispatcher.send(r, why, eta, mid), min_eta_s=dispatcher.min_eta_s,
                    strict=strict, on_cancelled=lambda r: control.cancel_tree(r))
    identity = identity_of(settings.key_prefix, runtime.run_store, coord.client, settings.store_url)
    if getattr(dispatcher, "identity", "") is None:  # a CeleryDispatcher: its messages name this store
        dispatcher.identity = identity  # type: ignore[attr-defined]
    return Driver(settings=settings, registry=registry, runtime=runtime, coord=coord, keeper=keeper,
                  dispatcher=dispatcher, ticker=ticker, control=control, strict=strict, identity=identity)


def _runtime(settings: Settings, registry: WorkflowRegistry, coord: Coordination, run_store: Any,
             ledger_store: Any, distributed: bool, runtime_kwargs: dict[str, Any]) -> Runtime:
    if run_store is None:
        if distributed and settings.store_url == "memory://":
            raise ConfigError("store_url is memory:// (the default when none is set), and a distributed driver "
                              "needs a store the workers share: set ABSTRACTRUNTIME_CELERY_STORE_URL (or "
                              "abstractruntime_store_url on the Celery conf) to redis://host:port/db (or "
                              "sqlite:/// / file:/// on one host)")
        run_store, default_ledger = open_stores(settings.store_url, prefix=settings.key_prefix,
                                                still_ours=coord.leases.holds, control_ttl_s=settings.control_ttl_s)
        ledger_store = ledger_store or default_ledger
    elif not isinstance(run_store, (FencedRunStore, RedisRunStore)):
        run_store = FencedRunStore(run_store, coord.leases.holds)
    if isinstance(run_store, FencedRunStore):
        run_store.on_saved = coord.marks.moved  # a tick's save that lands ends the run's failure row
    if ledger_store is None:
        from abstractruntime import InMemoryLedgerStore

        ledger_store = InMemoryLedgerStore()
    return Runtime(run_store=run_store, ledger_store=ledger_store, workflow_registry=registry, **runtime_kwargs)


def _check_one_redis(settings: Settings, coord_url: str, run_store: Any) -> None:
    """A Redis store fences its saves on the lease in its own Redis (in the save script):
    the coordination Redis must be that same server and database.

    Raises:
        ConfigError: they differ (names both, passwords redacted).
    """
    store_where = _redis_place(settings.store_url) if is_redis_url(settings.store_url) else None
    if isinstance(run_store, RedisRunStore):
        store_where = redis_place(run_store.client.connection_pool.connection_kwargs)
    if store_where is None or not is_redis_url(coord_url):
        return
    if _redis_place(coord_url) != store_where:
        raise ConfigError(
            f"coord_url {redact_url(coord_url)} is not the Redis store's server and database "
            f"({redact_url(settings.store_url)}): a Redis store checks each save against the run's lease "
            "in its own Redis, so leases, inboxes and timers must live there too. Leave coord_url empty "
            "(it then follows the store) or set it to the store's URL.")


def _check_one_prefix(settings: Settings, run_store: Any) -> None:
    """A given Redis run store keeps its indexes under its own prefix, and its saves clear
    the run's notes there: the leases, inboxes, notes and the sweep must use that prefix too.

    Raises:
        ConfigError: the store's prefix is not ``key_prefix``.
    """
    if isinstance(run_store, RedisRunStore) and run_store.prefix != settings.key_prefix:
        raise ConfigError(
            f"The given Redis run store's key prefix {run_store.prefix!r} is not key_prefix "
            f"{settings.key_prefix!r}: the sweep would walk indexes the store never writes and a "
            "moving save would clear notes that are not there. Set key_prefix "
            "(ABSTRACTRUNTIME_CELERY_KEY_PREFIX) to the store's prefix.")


def _redis_place(url: str) -> tuple[Any, ...]:
    """(host, port, db, socket path) a Redis URL names.

    Raises:
        ConfigError: the URL is malformed.
    """
    import redis

    try:
        return redis_place(redis.ConnectionPool.from_url(url).connection_kwargs)
    except ValueError as exc:
        raise ConfigError(f"Malformed Redis URL {redact_url(url)}: {exc}") from exc
