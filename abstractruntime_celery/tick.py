"""The tick path, top to bottom: lease -> read -> apply an event or a child's result ->
Runtime.tick -> save (fenced) -> release -> send what comes next.

Every Celery delivery of a tick lands here, as does every embedded tick. A
duplicate, early or late delivery is harmless: the lease serialises ticks of one
run across the cluster, a tick of a run that is not due changes nothing, and
each is counted as such.

What a tick does is held in one ``TickContext`` (``context.py``), created with
the lease and passed down explicitly. Its rule for deferred work: writes ride
the next round trip in order; what a refused save invalidates goes with it
(an applied event leaves the inbox only in the save that commits it; counters
and the "resumed" notice of a commit go out only if the commit held). Messages
go after the release, one per destination, and at most one for the run itself
(a "continue" and an "asked" merge), so extra deliveries are absorbed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Callable, Optional

from abstractruntime import Runtime, RunState, RunStatus, WorkflowSpec

from . import timers, tracing
from .config import Settings
from .context import TickContext, current, entered, outside
from .coord import Coordination
from .coord.redis import RedisInbox, RedisLeases
from .errors import (
    LeaseBusyError,
    LeaseLostError,
    RunControlledError,
    RunExistsError,
    StoreUnavailableError,
    UnknownRunError,
    UnknownWorkflowError,
)
from .inbox import Event, InboxRead, Unreadable, describe, quote
from .lease import Lease, LeaseKeeper
from .marks import parse_backoff
from .metrics import histograms
from .registry import WorkflowRegistry, require_workflow
from .runstate import CANCEL_CHILDREN, TERMINAL, child_of, child_result, control_flag, paused, takes
from .stores.redis import RedisLedgerStore, RedisRunStore
from .stores.redis.codec import control_of

log = logging.getLogger(__name__)

#: How many inbox events / child results one tick applies before yielding.
MAX_ROUNDS = 20

#: (run id, reason, eta, message id or None): send a tick.
Sender = Callable[[str, str, Optional[datetime], Optional[str]], None]


@dataclass
class TickOutcome:
    """What one delivery did: the run's status after it, and whether anything changed."""

    run_id: str
    status: Optional[str]
    changed: bool = False
    skipped: Optional[str] = None  # "busy" | "unknown_workflow" | "lease_lost" | "controlled"
    #: The run needs another tick (RUNNING after max_steps, or more input than one tick takes).
    more: bool = False


@dataclass
class Start:
    """A start's request: ``Runtime.start`` keyword arguments, checked. ``reserve``: take
    the lease with the create's round trip (the run most likely does not exist yet)."""

    kwargs: dict[str, Any]
    reserve: bool = True

    @property
    def run_id(self) -> str:
        return str(self.kwargs["run_id"])


#: A retry delivered this close before its backoff ends runs (its ETA was the backoff's end;
#: the two are read on different clocks). Earlier, it is held back like any other tick.
RETRY_EARLY_S = 0.5


@dataclass
class _Read:
    """What a tick read with its lease (decoded lazily: the decode may raise)."""

    run: Callable[[], Optional[RunState]]
    inbox: Callable[[], InboxRead]
    done_empty: bool = False
    read_at: float = field(default_factory=time.monotonic)
    #: The run's stored trace context (``tracing=True``; None: none stored, or not read).
    trace: Any = None


class Ticker:
    """Advances runs, one leased tick at a time. Built once per process by ``build``."""

    def __init__(self, *, settings: Settings, runtime: Runtime, registry: WorkflowRegistry,
                 coord: Coordination, keeper: LeaseKeeper, send: Sender, min_eta_s: float,
                 strict: bool, on_cancelled: Callable[[str], None]) -> None:
        self.settings = settings
        self.runtime = runtime
        self.store: Any = runtime.run_store
        self.registry = registry
        self.coord = coord
        self.keeper = keeper
        self.send = send
        self.min_eta_s = min_eta_s
        self.strict = strict
        self.on_cancelled = on_cancelled
        self.timers = timers.Timers(coord.timers, _SenderView(send, min_eta_s), settings.timer_horizon_s)
        #: Tick duration, timer lateness and resume latency, sent with each release's counters.
        self.histograms = histograms.for_coordination(coord)
        #: Spans per tick and per node, joined to the run's trace (``tracing=True`` only).
        self.tracing = tracing.open_tracing(settings, coord)
        redis_coord = isinstance(coord.leases, RedisLeases) and isinstance(coord.inbox, RedisInbox)
        #: Store and coordination share one Redis and key prefix: reads ride the lease, saves
        #: are queued, and an applied event leaves the inbox inside its commit (``save_run.lua``).
        self.shared = redis_coord and isinstance(self.store, RedisRunStore) \
            and self.store.shares_connection(coord.client) and self.store.prefix == coord.keys.prefix
        ledger = runtime.ledger_store
        self.ledger_shared = self.shared and isinstance(ledger, RedisLedgerStore) \
            and ledger.shares_connection(coord.client)
        if self.shared:
            from . import scripts

            self._if_saved_script = scripts.register(coord.client, "if_saved")

    # --- one delivery ---------------------------------------------------------------

    def tick(self, run_id: str, *, reason: str = "tick", max_steps: Optional[int] = None,
             start: Optional[Start] = None, follow_up: bool = True,
             message_id: Optional[str] = None) -> TickOutcome:
        """Advance ``run_id`` as far as it can go now, under its lease; ``start`` creates it
        first, under the same lease. ``follow_up=False``: send no tick for the run itself
        afterwards (a caller that asked for ``max_steps`` drives it on). ``message_id``: the
        id of the message delivered (the run's pending tick of its own, or another).

        Raises:
            UnknownRunError: no such run (and no ``start``).
            RegistryError: the registry's lookup of the run's workflow raised (nothing moved).
            RunIdentityConflict: ``start`` names an existing run of another identity.
            Exception: a node handler's error (after counting it and sending a retry).
        """
        if reason == "timer":
            self._wait_out_short_remainder(run_id)
        ctx = TickContext(run_id, message_id=message_id, follow_up=follow_up)
        try:
            with entered(ctx):
                outcome = self._run(ctx, reason, max_steps, start)
        except RunExistsError:
            if start is None or not start.reserve:
                raise
            # A start delivered again: its run exists. Tick it as it is (checking identity).
            return self.tick(run_id, reason=reason, max_steps=max_steps, follow_up=follow_up,
                             start=Start(start.kwargs, reserve=False), message_id=message_id)
        except BaseException:
            self._follow_up(ctx)  # what was noted before the error (a retry)
            raise
        self._follow_up(ctx)
        return outcome

    def _run(self, ctx: TickContext, reason: str, max_steps: Optional[int], start: Optional[Start]) -> TickOutcome:
        began = time.monotonic()
        lease, read = self._begin(ctx, reason, start)
        if lease is None:
            self.coord.stats.incr("lease_busy")
            return TickOutcome(ctx.run_id, None, skipped="busy")
        ctx.fences[ctx.run_id] = lease.fence
        self.keeper.hold(lease)
        error: Optional[BaseException] = None
        outcome: Optional[TickOutcome] = None
        try:
            with self.tracing.tick_span(ctx, reason, read.trace):
                outcome = self._advance(ctx, read, reason,
                                        self.settings.tick_max_steps if max_steps is None else max_steps, start)
        except BaseException as exc:  # released below, then raised or turned into an outcome
            error = exc
        finally:
            self.keeper.drop(lease)
            self.histograms.observe(ctx, histograms.TICK, time.monotonic() - began)  # (rides the release)
            try:
                self.coord.leases.release(lease, ctx)  # (ctx.send_own: the run's next tick)
            except Exception as exc:
                error = error or exc
        if isinstance(error, (LeaseLostError, RunControlledError)):
            return self._refused(ctx, error)
        if error is not None:
            raise error
        assert outcome is not None
        return outcome

    def _begin(self, ctx: TickContext, reason: str, start: Optional[Start]) -> tuple[Optional[Lease], _Read]:
        """Take the lease. With one shared Redis, the run, its inbox (headers, and the
        payload it can take now) and whether its ledger has completed steps are read in
        the same round trip; a start reserves the lease with no round trip at all."""
        run_id, leases, inbox = ctx.run_id, self.coord.leases, self.coord.inbox
        if not self.shared:
            lease = leases.acquire(run_id, ctx.message_id or "")
            if lease is not None:
                ctx.backoff_until = self.coord.marks.backoff_until(run_id)
            if reason == "timer":
                self.coord.timers.fired(run_id)
            return lease, _Read(run=lambda: self.store.load(run_id), inbox=lambda: inbox.pending(run_id),
                                trace=self.tracing.load(run_id) if lease is not None else None)
        assert isinstance(leases, RedisLeases) and isinstance(inbox, RedisInbox)
        if start is not None and start.reserve and self.ledger_shared:
            ctx.reserved = True
            return leases.reserve(ctx, run_id), _Read(run=lambda: None, inbox=lambda: InboxRead([], []),
                                                      done_empty=True)
        keys = self.coord.keys
        read_inbox = inbox.read_op(run_id, keys.run(run_id))
        reads = [read_inbox, self.store.read_op(run_id),
                 lambda pipe: pipe.mget(keys.attempts(run_id), keys.unknown(run_id), keys.backoff(run_id))]
        if self.ledger_shared:
            reads.append(lambda pipe: pipe.exists(keys.ledger_done(run_id)))
        if reason == "timer":  # the timer message is delivered: none is in flight any more
            reads.append(lambda pipe: pipe.delete(keys.timer(run_id)))
        trace_at = len(reads)
        if self.tracing.enabled:  # (only then: the read costs a command)
            reads.append(lambda pipe: pipe.get(keys.trace(run_id)))
        lease, results = leases.acquire_reading(run_id, reads, ctx.message_id or "")
        if lease is not None and results is None:  # a read did not decode: repair, read again
            results = self._read_again(ctx, reads)
        if lease is not None:
            marks = results[2] if isinstance(results[2], list) else [None, None, None]
            ctx.unknown_noted = marks[1] is not None
            ctx.backoff_until = parse_backoff(marks[2])
        trace = results[trace_at] if lease is not None and self.tracing.enabled else None
        return lease, _Read(run=lambda: self.store.from_read(run_id, results[1]),
                            inbox=lambda: inbox.parse_read(run_id, _again_if_noscript(results[0], read_inbox,
                                                                                      self.coord.client)),
                            done_empty=self.ledger_shared and results[3] == 0,
                            trace=trace)

    def _read_again(self, ctx: TickContext, reads: list[Any]) -> list[Any]:
        """The lease's read met bytes that are not UTF-8: move the run's undecodable inbox
        entries aside (reported by this tick), then read again (a run record that still does
        not decode is a corrupt run)."""
        ctx.repaired = self.coord.inbox.repair(ctx.run_id)
        pipe = self.coord.client.pipeline(transaction=False)
        for read in reads:
            read(pipe)
        try:
            return pipe.execute(raise_on_error=False)
        except UnicodeDecodeError as exc:
            from .errors import CorruptRunError

            raise CorruptRunError(ctx.run_id, f"its record is not UTF-8 ({exc})") from exc

    # --- the tick proper, holding the lease ---------------------------------------------

    def _advance(self, ctx: TickContext, read: _Read, reason: str, max_steps: int,
                 start: Optional[Start]) -> TickOutcome:
        run = read.run()
        inbox = read.inbox()
        ctx.done_empty = read.done_empty
        if run is not None:
            ctx.confirm(control_of(run), at=read.read_at)
        if start is not None:
            run = self._create(ctx, run, start)
        if run is None:
            self._drop_orphan_events(ctx, inbox)
            self.coord.stats.incr("duplicates", ctx=ctx)
            raise UnknownRunError(ctx.run_id)
        self.tracing.adopt(ctx, run)
        inbox.unreadable += ctx.repaired
        if self.strict:  # a keyless event (from a process in seed mode) answers nothing here
            inbox.unreadable += [Unreadable(e.run_id, e.event_id, e.header(), "an event without a wait key, "
                                            "which strict workers (wait_key_mode) never apply")
                                 for e in inbox.events if e.wait_key is None]
            inbox.events = [e for e in inbox.events if e.wait_key is not None]
        self._quarantine(ctx, inbox)
        events = self._resolve_marks(ctx, run, inbox.events)
        if run.status in TERMINAL:
            self._after_terminal(ctx, run, events, committed=True)
            self.coord.stats.incr("duplicates", ctx=ctx)
            return TickOutcome(run.run_id, run.status.value)
        if run.parent_run_id and self._parent_cancels_children(run):  # (whatever woke it: a timer too)
            ctx.cascade = True  # its parent was cancelled with its children: cancel it, after the release
            return TickOutcome(run.run_id, run.status.value, skipped="controlled")
        try:
            workflow = saved_first(require_workflow(self.registry, run.workflow_id, run.run_id))
        except UnknownWorkflowError as exc:
            return self._unknown_workflow(ctx, run, exc)
        if ctx.unknown_noted is not False:  # a worker that knows it ticks it: a stale worker's
            self.coord.marks.clear_unknown(run.run_id, ctx)  # note goes (with the release, if ours)
        if self._backing_off(ctx, run, reason):
            return TickOutcome(run.run_id, run.status.value, skipped="backoff")
        return self._step(ctx, workflow, run, events, reason, max_steps)

    def _backing_off(self, ctx: TickContext, run: RunState, reason: str) -> bool:
        """A failing run waits out its backoff: a tick other than its retry (an event for a
        later wait, the sweep, a duplicate) leaves it alone, and the retry stays its one
        pending tick (sent again, with the rest of the backoff, if this tick was it). A tick
        asked for by hand (``ScheduledRuntime.tick``) runs, as the seed's would."""
        until, now = ctx.backoff_until, time.time()
        if until is None or reason == "manual" or now >= until - (RETRY_EARLY_S if reason == "retry" else 0.0):
            return False  # (a WAITING run backs off too: a wait resolved in memory before the failure)
        self.coord.stats.incr("early", ctx=ctx)
        self._retry_at(ctx, until)
        return True

    def _retry_at(self, ctx: TickContext, until: float) -> None:
        """Make the run's own next tick its retry, due at ``until`` (epoch s)."""
        ctx.want_more = True
        ctx.retry_eta = datetime.fromtimestamp(until, timezone.utc)
        ctx.note_ttl_s = max(0.0, until - time.time()) + self.settings.orphan_grace_s

    def _step(self, ctx: TickContext, workflow: WorkflowSpec, run: RunState, events: list[Event],
              reason: str, max_steps: int) -> TickOutcome:
        before, was_waiting, more = _fingerprint(run), run.status == RunStatus.WAITING, False
        late_s = _late_by(run)  # (a due wait this tick takes up: how late)
        ctx.handoff = run  # the Runtime's first load takes the lease's read
        try:
            for _ in range(MAX_ROUNDS):
                resumed = self._apply_event(ctx, workflow, run, events) or self._resume_from_child(ctx, workflow, run)
                if resumed is not None:
                    ctx.handoff = resumed  # the tick's load takes the state the resume saved
                run = self.runtime.tick(workflow=workflow, run_id=run.run_id, max_steps=max_steps)
                if not self._has_input(run, events):
                    break
            else:
                more = True  # more input than one tick applies: yield, and go on in another tick
        except (LeaseLostError, RunControlledError, RunExistsError):
            raise  # a refused write, not a failing node
        except Exception as exc:
            if not (isinstance(exc, StoreUnavailableError) and getattr(exc, "write_dropped", False)):
                self._failed(ctx, run.run_id, exc)
            # (else the store dropped the tick's own commit, a blip or an outage: the task
            # retries, and no attempt counts; one a node raised, from any store, does)
            raise
        changed = _fingerprint(run) != before
        if changed and late_s is not None:
            self.histograms.observe(ctx, histograms.TIMER_LATENESS, late_s)
        if changed and not ctx.created and self.shared:
            ctx.clear_marks = True  # with the commit, only if it holds (``lua/if_saved.lua``); also
            # notes written after our read (a tick that had lost its lease failed meanwhile)
        # (the other stores: each moving save already cleared them, ``FencedRunStore.on_saved``)
        self._schedule_next(ctx, run, events)
        self._count_commit(ctx, run, changed, was_waiting, reason)
        more = more or run.status == RunStatus.RUNNING
        ctx.want_more = more and ctx.follow_up  # the release decides whether to send it
        return TickOutcome(run.run_id, run.status.value, changed=changed, more=more)

    def _create(self, ctx: TickContext, run: Optional[RunState], start: Start) -> Optional[RunState]:
        """Make the run under our lease (a start). An existing run is checked by
        ``Runtime.start`` (its creation identity), not rewritten."""
        if self.shared:  # the create counts it in its own step: a worker killed before its
            ctx.count_started = True  # release (the count's ride) cannot lose it (``save_run.lua``)
        else:
            ctx.on_created = lambda: self.coord.stats.incr("runs_started", ctx=ctx)
        self.runtime.start(**start.kwargs)
        if run is not None:
            return run
        return ctx.created_run if ctx.created_run is not None else self.store.load(ctx.run_id)

    # --- what may move a waiting run -------------------------------------------------

    def _apply_event(self, ctx: TickContext, workflow: WorkflowSpec, run: RunState,
                     events: list[Event]) -> Optional[RunState]:
        """Apply the oldest inbox event the run can take now (at most one); it leaves
        ``events``. Returns the run as the resume saved it, or None."""
        event = next((e for e in events if takes(run, e)), None)
        if event is None:
            return None
        payload = event.payload if event.payload is not None else self._payload(ctx, event)
        if payload is None:  # unreadable or gone: moved aside and reported, the run goes on
            events.remove(event)
            return self._apply_event(ctx, workflow, run, events)
        assert run.waiting is not None
        if not self.shared:
            self.coord.inbox.mark_applying(event, run.updated_at or "", ctx.fence(run.run_id))
        ctx.applying = [event.event_id]
        latency = time.time() - event.accepted_at
        if self.shared:  # counted by the save that applies it, only if that save lands
            ctx.applying_hist = histograms.observation(histograms.RESUME_LATENCY, latency)
        try:
            resumed = self.runtime.resume(workflow=workflow, run_id=run.run_id, wait_key=run.waiting.wait_key,
                                          payload=payload, max_steps=0)
        finally:
            ctx.applying, ctx.applying_hist = [], {}
        if not self.shared:  # after the commit (a crash in between: the mark tells)
            self.histograms.observe(ctx, histograms.RESUME_LATENCY, latency)
            self.coord.inbox.done(run.run_id, [event.event_id])
            self.coord.stats.incr("events_applied", ctx=ctx)
        events.remove(event)
        return resumed

    def _payload(self, ctx: TickContext, event: Event) -> Optional[dict[str, Any]]:
        """The event's payload, read now (not the one the lease's read brought); None, after
        quarantining the entry, if it is unreadable or missing."""
        try:
            payload = self.coord.inbox.load_payload(event)
            error = "its payload is missing" if payload is None else ""
        except ValueError as exc:
            payload, error = None, str(exc)
        if payload is None:
            self._quarantine(ctx, InboxRead([], [Unreadable(event.run_id, event.event_id, event.header(), error)]))
        return payload

    def _resume_from_child(self, ctx: TickContext, workflow: WorkflowSpec, run: RunState) -> Optional[RunState]:
        """Resume a parent whose child has ended (nothing else ever does); not while paused."""
        child_id = child_of(run)
        if child_id is None or paused(run):
            return None
        child = self.store.load(child_id)
        if child is None or child.status not in TERMINAL:
            return None
        assert run.waiting is not None
        resumed = self.runtime.resume(workflow=workflow, run_id=run.run_id, wait_key=run.waiting.wait_key,
                                      payload=child_result(child), max_steps=0)
        ctx.commit_counts["parents_resumed"] += 1
        return resumed

    def _has_input(self, run: RunState, events: list[Event]) -> bool:
        """After a tick parks the run: is there already an event or a child result for it?"""
        if run.status != RunStatus.WAITING or run.waiting is None or paused(run):
            return False
        child_id = child_of(run)
        if child_id is not None:
            child = self.store.load(child_id)
            return child is not None and child.status in TERMINAL
        return any(takes(run, e) for e in events)

    def _resolve_marks(self, ctx: TickContext, run: RunState, events: list[Event]) -> list[Event]:
        """Stores without an atomic drop: an event marked *applying* when the run had another
        ``updated_at`` was committed before a crash; drop it now. One marked at the run's
        ``updated_at`` was not (its tick crashed or lost its lease before the commit): clear
        the mark, before any save of ours would make it read as committed. (Every lease
        holder that saves the run does this first; see also ``Control._settle_marks``.)"""
        left = []
        for event in events:
            if event.applying_since is not None and event.applying_since != (run.updated_at or ""):
                self.coord.inbox.done(run.run_id, [event.event_id])
                continue
            if event.applying_since is not None:
                self.coord.inbox.mark_applying(event, None, ctx.fence(run.run_id))
            left.append(event)
        return left

    def _quarantine(self, ctx: TickContext, read: InboxRead) -> None:
        for bad in read.unreadable:
            if not bad.moved:
                self.coord.inbox.quarantine(bad)
            self.coord.stats.incr("events_quarantined", ctx=ctx)
            message = describe(bad)
            self.coord.stats.error(message)
            ctx.notices.append(("failed", bad.run_id, message))

    # --- after the Runtime's tick ------------------------------------------------------

    def _count_commit(self, ctx: TickContext, run: RunState, changed: bool, was_waiting: bool, reason: str) -> None:
        """Counters and the notice of what this tick committed: with queued saves they go
        out only if the last save held (``lua/if_saved.lua``), otherwise now."""
        self.coord.stats.incr("ticks", ctx=ctx)
        if not changed:
            self.coord.stats.incr("early" if reason == "timer" else "duplicates", ctx=ctx)
            ctx.commit_held = True  # (nothing to hold: nothing was written)
            return
        ctx.commit_counts["transitions"] += 1
        if was_waiting:
            ctx.commit_counts["runs_resumed"] += 1
            ctx.notices.append(("resumed", run.run_id, run.status.value))
        if self.shared and ctx.last_saved_updated is not None:
            self._if_saved(ctx)
        else:
            for name, n in ctx.commit_counts.items():
                self.coord.stats.incr(name, n, ctx=ctx)
            ctx.commit_held = True

    def _if_saved(self, ctx: TickContext) -> None:
        from . import scripts

        notices, keys_ = self.coord.notices, self.coord.keys
        message = next((notices.message(*n) for n in ctx.notices if n[0] == "resumed"), "")
        if self._ride_the_save(ctx, message):
            return
        keys = [keys_.run(ctx.run_id), keys_.stats, keys_.inbox(ctx.run_id), keys_.inbox_body(ctx.run_id),
                keys_.inbox_runs]
        # No save of the tick is queued any more and none was refused: its last save has
        # landed (a refusal raises before this). Then a pause or cancel that landed since
        # (it changes ``updated``) must not make the commit read as refused. (Events an ended
        # run never took still go only if nothing moved it since: a retry may have.)
        landed = ctx.queue.refused is None and not ctx.queue.has_commit() and not ctx.drop_on_commit
        if ctx.clear_marks and landed:  # with the release, only if the lease is still ours: the
            self.coord.marks.moved(ctx.run_id, ctx)  # notes of a tick that took over stay
        elif ctx.clear_marks:  # in the commit's own step: a next tick's failure is never erased
            keys += [keys_.attempts(ctx.run_id), keys_.unknown(ctx.run_id), keys_.backoff(ctx.run_id)]
        args: list[Any] = ["" if landed else ctx.last_saved_updated, notices.channel, message, ctx.run_id,
                           json.dumps(ctx.drop_on_commit)]
        for name, n in ctx.commit_counts.items():
            args += [name, n]
        script = self._if_saved_script

        def held(reply: Any) -> None:
            ctx.commit_held = int(reply) == 1

        ctx.queue.add_after(self.coord.client, lambda pipe: scripts.call_in(pipe, script, keys, args), held)
        ctx.published = True

    def _ride_the_save(self, ctx: TickContext, message: str) -> bool:
        """Put what ``if_saved.lua`` would do into the options of the tick's last save while
        it is still queued (``lua/save_run.lua`` does it only if that save lands): one
        command fewer. False (nothing done) if that save was sent already."""
        queued = ctx.queued_save
        if queued is None or queued.updated != ctx.last_saved_updated or not queued.queued_in(ctx.queue):
            return False
        options = json.loads(queued.args[2])
        options["counts"] = {name: n for name, n in ctx.commit_counts.items() if n}
        options["drop"] = list(ctx.drop_on_commit)
        if message:
            options["notice"] = [self.coord.notices.channel, message]
        if ctx.clear_marks:
            options["clear"] = "1"
        queued.args[2] = json.dumps(options)
        queued.on_landed.append(lambda: setattr(ctx, "commit_held", True))
        ctx.published = True
        return True

    def _schedule_next(self, ctx: TickContext, run: RunState, events: list[Event]) -> None:
        """Note the messages this run now needs (sent after the release): its timer, its
        child, its parent; the Runtime's listeners and async children are already noted."""
        if run.status == RunStatus.WAITING and not paused(run):
            if run.waiting is not None and run.waiting.until:
                self.timers.arm(run.run_id, run.waiting.until, ctx)
            child_id = child_of(run)
            if child_id is not None:
                ctx.sends.append((child_id, "child", None, None))
        elif run.status in TERMINAL:
            self._after_terminal(ctx, run, events)

    def _after_terminal(self, ctx: TickContext, run: RunState, events: list[Event], committed: bool = False) -> None:
        """A run ended: wake its parent, cancel its children if asked to, and drop (and
        report) the events it never took: at once if its end is committed already, else
        only with that commit (``lua/if_saved.lua``: a refused end drops nothing)."""
        if run.parent_run_id:
            ctx.sends.append((run.parent_run_id, "child", None, None))
        if run.status == RunStatus.CANCELLED and control_flag(run, CANCEL_CHILDREN):
            ctx.cascade = True
        notes = [f"Run {run.run_id}: ended ({run.status.value}) before event {e.event_id} "
                 f"(wait_key {quote(e.wait_key)}) could be applied" for e in events]
        if events and (committed or not self.shared):
            self.coord.inbox.done(run.run_id, [e.event_id for e in events])
            for note in notes:
                self.coord.stats.error(note)
        elif events:
            ctx.drop_on_commit += [e.event_id for e in events]
            ctx.drop_notes += notes

    def _drop_orphan_events(self, ctx: TickContext, inbox: InboxRead) -> None:
        """Events of a run no store holds: it was deleted (retention, ``delete``) after
        ``resume_event`` checked it and before the event was stored. Nothing can take them;
        dropped (and reported) under the lease, or the sweep would re-send a tick for ever."""
        if not inbox.events:
            return
        self.coord.inbox.done(ctx.run_id, [e.event_id for e in inbox.events])
        for e in inbox.events:
            self.coord.stats.error(f"Run {ctx.run_id}: no such run (deleted) for event {e.event_id} "
                                   f"(wait_key {quote(e.wait_key)}); dropped")

    def _parent_cancels_children(self, run: RunState) -> bool:
        """The run's parent was cancelled with its children (a cascade whose own message was
        lost, or that ran before this child existed). A cheap status read first."""
        parent_id = str(run.parent_run_id)
        probe = getattr(self.store, "probe_control", None)
        control = probe(parent_id) if probe is not None else None
        if control is not None and control[0] != RunStatus.CANCELLED.value:
            return False
        parent = self.store.load(parent_id)
        return parent is not None and parent.status == RunStatus.CANCELLED \
            and bool(control_flag(parent, CANCEL_CHILDREN))

    # --- when things go wrong -------------------------------------------------------------

    def _failed(self, ctx: TickContext, run_id: str, exc: Exception) -> None:
        """A node raised: count it and send a retry with backoff; after ``tick_max_attempts``
        failures in a row, mark the run FAILED (its parent is then resumed). If this tick
        moved the run first (a node completed, an event applied: ``ctx.moved``), the failure
        starts a new row; a save a node made of its own run while it ran does not count."""
        if ctx.queue.writes:  # progress made before the failure lands first: its save ends the old
            with contextlib.suppress(Exception):  # row, never this failure (a refusal: raised later)
                ctx.queue.flush()
        attempts = self.coord.marks.add_attempt(run_id, fresh=ctx.moved)
        self.coord.stats.incr("tick_errors", ctx=ctx)
        message = f"Run {run_id}: tick failed (attempt {attempts}): {type(exc).__name__}: {quote(str(exc), 300)}"
        self.coord.stats.error(message)
        ctx.notices.append(("failed", run_id, message))
        if attempts >= self.settings.tick_max_attempts:
            # (its attempts stay, to expire: if a pause refused this save, the row goes on)
            self.fail_run(ctx, run_id, f"Tick failed {attempts} times; last error: {type(exc).__name__}: {exc}")
            return
        # The retry is the run's own next tick (one pending tick: a tick asked for meanwhile
        # merges into it), and other ticks leave the run alone until it is due (``_backing_off``).
        until = time.time() + retry_delay(self.settings, attempts)
        self.coord.marks.back_off(run_id, until)
        self._retry_at(ctx, until)

    def fail_run(self, ctx: TickContext, run_id: str, error: str) -> None:
        """Mark a run FAILED under the lease ``ctx`` holds (fenced) and wake its parent."""
        run = self.store.load(run_id)
        if run is None or run.status in TERMINAL:
            return
        run.status, run.error, run.waiting = RunStatus.FAILED, error, None
        run.updated_at = datetime.now(timezone.utc).isoformat()
        self.store.save(run)
        if run.parent_run_id:
            ctx.sends.append((run.parent_run_id, "child", None, None))
        ctx.want_more = ctx.want_more or ctx.follow_up  # its own next tick drops (and reports) the events it never took

    def _unknown_workflow(self, ctx: TickContext, run: RunState, exc: UnknownWorkflowError) -> TickOutcome:
        """Keep the run (the sweep retries it); fail it only after the grace period."""
        self.coord.stats.incr("unknown_workflow", ctx=ctx)
        since = self.coord.marks.unknown_since(run.run_id)
        message = str(exc)
        self.coord.stats.error(message)
        ctx.notices.append(("failed", run.run_id, message))
        if time.time() - since >= self.settings.unknown_workflow_grace_s:
            self.fail_run(ctx, run.run_id, f"{message}; still unknown after {self.settings.unknown_workflow_grace_s:.0f}s")
        return TickOutcome(run.run_id, run.status.value, skipped="unknown_workflow")

    def _refused(self, ctx: TickContext, exc: BaseException) -> TickOutcome:
        """A write of the tick was refused: the tick ends quietly (nothing it queued
        behind the refusal landed). A lost lease counts as a failed attempt, so a node
        that always outlives its lease (one long call holding the GIL) is stopped."""
        ctx.refused = exc
        run_id = ctx.run_id
        if isinstance(exc, RunControlledError):
            self.coord.stats.incr("controlled")
            log.info("run %s: a cancel or pause landed mid-tick; the tick's save was refused", run_id)
            if exc.status == RunStatus.CANCELLED.value:  # its end: cancel its children if asked to
                with outside():  # (not through this tick's queue: it holds the refusal)
                    run = self.store.load(run_id)
                ctx.cascade = run is not None and bool(control_flag(run, CANCEL_CHILDREN))
            return TickOutcome(run_id, exc.status, skipped="controlled")
        if isinstance(exc, LeaseBusyError):  # a start delivered twice at once: the other copy ticks it
            self.coord.stats.incr("lease_busy")
            return TickOutcome(run_id, None, skipped="busy")
        self.coord.stats.incr("lease_lost")
        # (counted only while the run exists: retention may have deleted it meanwhile)
        attempts = self.coord.marks.add_attempt(run_id, run_key=self.coord.keys.run(run_id) if self.shared else None)
        if attempts == 0:
            log.info("run %s: lease lost mid-tick; the run is gone (deleted meanwhile)", run_id)
            return TickOutcome(run_id, None, skipped="lease_lost")
        message = (f"Run {run_id}: lease lost mid-tick (attempt {attempts}); its write was refused. The lease "
                   f"keeper last ran {self.keeper.starved_s():.1f}s ago: a node that runs longer than "
                   f"lease_ttl_s={self.settings.lease_ttl_s:g}s without letting the keeper renew (one long "
                   "call holding the GIL, or a frozen process) never commits; raise lease_ttl_s")
        log.warning(message)
        self.coord.stats.error(message)
        ctx.notices.append(("failed", run_id, message))
        if attempts >= self.settings.tick_max_attempts:
            self._fail_lost(run_id, f"Lease lost {attempts} times in a row; a node outlives "
                                    f"lease_ttl_s={self.settings.lease_ttl_s:g}s")
        return TickOutcome(run_id, None, skipped="lease_lost")

    def _fail_lost(self, run_id: str, error: str) -> None:
        """Fail a run whose ticks keep losing their lease, under a fresh lease (if free)."""
        lease = self.coord.leases.acquire(run_id)
        if lease is None:
            return  # someone else ticks it now
        ctx = TickContext(run_id, fences={run_id: lease.fence})
        with entered(ctx):
            try:
                self.fail_run(ctx, run_id, error)
            finally:
                self.coord.leases.release(lease, ctx)
        self.coord.marks.clear_attempts(run_id)
        self._follow_up(ctx)

    # --- after the release ---------------------------------------------------------------

    def _follow_up(self, ctx: TickContext) -> None:
        """Cancel the children of a run cancelled with them (first: a child this tick spawned
        must be cancelled before its tick goes), then send the messages the tick noted (at
        most one per run; the run's own only if the release said so: it needs one, or one
        was asked meanwhile, and none is pending), and the notices of what it committed."""
        if ctx.cascade:
            self.on_cancelled(ctx.run_id)
        reason = "retry" if ctx.retry_eta is not None else "continue" if ctx.want_more else "asked"
        own = [(ctx.run_id, reason, ctx.retry_eta, ctx.next_id)] if ctx.send_own else []
        self._send_all(own + list(ctx.sends) + [(r, "event", None, None) for r in ctx.listeners]
                       + [(r, "child", None, None) for r in ctx.children])
        for note in ctx.drop_notes if ctx.commit_held else ():
            self.coord.stats.error(note)
        notices = self.coord.notices
        for kind, run_id, detail in ctx.notices:
            if kind == "resumed" and not ctx.commit_held:
                continue  # its commit was refused: nothing was resumed
            notices.signal(kind, run_id, detail)
            if kind == "failed" or not ctx.published:
                notices.publish(notices.message(kind, run_id, detail))

    def _send_all(self, sends: list[tuple[str, str, Any, Optional[str]]]) -> None:
        """One message per (run, eta): a run noted twice gets one tick. A timer is never
        folded into another tick: its note says a timer message is in flight (none is armed
        again while it lives), and only a ``timer`` delivery waits out a sub-second remainder
        and clears the note. Folded into the run's own tick (both with no ETA: a timer under
        a second, on native delayed delivery), the run would wait until the note expires."""
        seen: set[tuple[str, Any, bool]] = set()
        for run_id, reason, eta, message_id in sends:
            key = (run_id, eta, reason == "timer")
            if key in seen:
                continue
            seen.add(key)
            self.send(run_id, reason, eta, message_id)

    def _wait_out_short_remainder(self, run_id: str) -> None:
        """A timer sent with no ETA (under a second to go) may arrive early: wait out the rest."""
        if self.min_eta_s <= 0:
            return
        run = self.store.load(run_id)
        if run is None or run.status != RunStatus.WAITING or run.waiting is None or not run.waiting.until:
            return
        remaining = timers.parse_until(run.waiting.until) - time.time()
        if 0 < remaining <= timers.MIN_ETA_S:
            time.sleep(remaining)


def _again_if_noscript(result: Any, op: Callable[[Any], Any], client: Any) -> Any:
    """A pipelined script read the server had forgotten (a restart): run it again on its own."""
    from redis.exceptions import NoScriptError

    return op(client) if isinstance(result, NoScriptError) else result


def retry_delay(settings: Settings, attempts: int) -> float:
    """Seconds before the next try of a failing run: exponential, capped, with jitter
    (Celery's own backoff function, so it behaves like a task's ``retry_backoff``). The cap
    is also ``timer_horizon_s``: the retry is a broker ETA, and none is held past it."""
    from celery.utils.time import get_exponential_backoff_interval

    cap = min(settings.retry_backoff_max_s, settings.timer_horizon_s)
    base = get_exponential_backoff_interval(factor=settings.retry_backoff_s, retries=attempts - 1,
                                            maximum=cap, full_jitter=False)
    if not settings.retry_jitter:
        return float(base)
    import random

    return float(base) * (0.5 + random.random() / 2)


class _SenderView:
    def __init__(self, send: Sender, min_eta_s: float) -> None:
        self._send = send
        self.min_eta_s = min_eta_s

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None) -> None:
        self._send(run_id, reason, eta, None)


class _SavedFirst:
    """Mixed into the workflow's own class for a tick: before the Runtime takes a node's
    handler, the saves the tick queued are sent, so no node runs on state that is not in
    the store, and a refused save stops the tick before the node. A subclass's own
    ``get_node`` is kept (it runs after the send)."""

    def get_node(self, node_id: str) -> Any:
        ctx = current()
        if ctx is not None:
            ctx.queue.check()  # a refusal someone swallowed (the Runtime's probe) still stops us
            if ctx.queue.has_commit():
                ctx.queue.flush()
        handler = super().get_node(node_id)  # type: ignore[misc]
        if ctx is None or not callable(handler):
            return handler

        def in_node(run: Any, runtime_ctx: Any) -> Any:
            """The node runs: a save it makes of its own run is a checkpoint, not a move."""
            ctx.in_node += 1
            try:
                with tracing.node_span(ctx, run, node_id):
                    return handler(run, runtime_ctx)
            finally:
                ctx.in_node -= 1

        return in_node


@lru_cache(maxsize=None)
def _saved_first_class(cls: type) -> type:
    return type(f"SavedFirst{cls.__name__}", (_SavedFirst, cls), {"__module__": cls.__module__})


def saved_first(workflow: WorkflowSpec) -> WorkflowSpec:
    """``workflow`` as a tick hands it to the Runtime (same fields, same class behaviour)."""
    import copy

    clone = copy.copy(workflow)
    object.__setattr__(clone, "__class__", _saved_first_class(type(workflow)))
    return clone


def _late_by(run: RunState) -> Optional[float]:
    """Seconds since the run's wait fell due (its ``until``), if it waits and is due now."""
    waiting = run.waiting
    if run.status != RunStatus.WAITING or waiting is None or not waiting.until:
        return None
    try:
        late = time.time() - timers.parse_until(waiting.until)
    except ValueError:
        return None
    return late if late >= 0 else None


def _fingerprint(run: RunState) -> tuple[Any, ...]:
    return (run.status, run.current_node, run.updated_at)
