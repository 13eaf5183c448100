"""The tick path, top to bottom: lease -> load -> apply inbox / child result ->
Runtime.tick -> save (fenced) -> schedule what comes next -> release.

Every Celery delivery of a tick or resume message lands here, as does every
embedded tick. A duplicate, early or late delivery is harmless: the lease
serialises ticks of one run across the cluster, a tick of a run that is not
due changes nothing, and each is counted as such.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable

from abstractruntime import RunState, RunStatus, WaitReason, WorkflowSpec

from . import timers
from .batch import collecting, flush_all, has_commit, take_ahead
from .errors import LeaseLostError, RunControlledError, UnknownRunError, UnknownWorkflowError
from .inbox import Event
from .lease import Lease, fenced
from .stores.handoff import handing_off
from .stores.known import knowing, known, learn
from .stores.redis_runs import control_of

if TYPE_CHECKING:
    from .driver import Driver

log = logging.getLogger(__name__)

TERMINAL = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
#: How many inbox events / child results one tick applies before yielding.
MAX_ROUNDS = 20


@dataclass
class TickOutcome:
    """What one delivery did: the run's status after it, and whether anything changed."""

    run_id: str
    status: str | None
    changed: bool = False
    skipped: str | None = None  # "busy" | "unknown_workflow" | "lease_lost" | "controlled"


def tick_run(d: "Driver", run_id: str, *, reason: str = "tick", max_steps: int | None = None,
             create: Callable[[], Any] | None = None, fresh: bool = False) -> TickOutcome:
    """Advance one run as far as it can go now, under its lease; ``create`` (a start)
    makes the run under the same lease first (``fresh``: see ``Driver.begin_tick``).

    Raises:
        Exception: whatever a node handler or ``create`` raised, after counting it (the caller retries).
    """
    if reason == "timer" and d.dispatcher.min_eta_s > 0:
        _wait_out_short_remainder(d, run_id)
    outcome: TickOutcome | None = None
    asked_again = False
    with collecting() as deferred, knowing():
        lease, reads = d.begin_tick(run_id, fresh=fresh and create is not None)
        if lease is not None:
            outcome, asked_again = _leased_tick(d, lease, reads, reason, max_steps, create, deferred)
    # counted here, after the release pipeline has gone: outside ``collecting`` it goes at once
    if outcome is None:
        d.coord.stats.incr("lease_busy")
        return TickOutcome(run_id, None, skipped="busy")
    if outcome.skipped == "lease_lost":
        d.coord.stats.incr("lease_lost")
        log.warning("run %s: lease lost mid-tick; the stale write was refused", run_id)
    elif outcome.skipped == "controlled":
        d.coord.stats.incr("controlled")
        log.info("run %s: a cancel or pause landed mid-tick; the tick's save was refused", run_id)
    if asked_again:
        d.dispatcher.tick(run_id, reason="asked")
    return outcome


def _leased_tick(d: "Driver", lease: Lease, reads: Callable[[], Any], reason: str, max_steps: int | None,
                 create: Callable[[], Any] | None, deferred: list[Any]) -> tuple[TickOutcome, bool]:
    """The tick proper, holding ``lease``; releases it (with the queued writes) however it ends.
    Returns the outcome and whether a tick was asked for meanwhile. A write refused for a
    lost lease or a control action, during the tick or as the release sends it, ends it quietly.

    Raises:
        Exception: a node handler's or ``create``'s error (after the release).
    """
    run_id = lease.run_id
    asked_again = False
    d.keeper.hold(lease)
    try:
        try:
            events, run = reads()
            with fenced(run_id, lease.key, lease.token):
                if create is not None:
                    run = _create(d, run_id, run, create)
                outcome = _advance(d, run, run_id, reason, max_steps or d.settings.tick_max_steps, events)
        finally:
            d.keeper.drop(lease)
            client = getattr(d.coord.leases, "client", None)
            ahead = take_ahead(client) if client is not None else []
            asked_again = d.coord.leases.release(lease, deferred, ahead)
    except LeaseLostError:
        outcome = TickOutcome(run_id, None, skipped="lease_lost")
    except RunControlledError as exc:
        outcome = TickOutcome(run_id, exc.status, skipped="controlled")
    return outcome, asked_again


def _create(d: "Driver", run_id: str, run: RunState | None, create: Callable[[], Any]) -> RunState | None:
    """Make the run under our lease; the store hands back what it wrote, so the tick
    needs no read. A run that exists already is checked by ``create`` (its identity), not rewritten."""
    create()
    if run is not None:
        return run
    entry = learn(run_id)
    created = entry.created if entry is not None else None
    if created is None:
        return d.run_store.load(run_id)
    entry.created = None
    entry.born = True
    entry.confirm(control_of(created))
    return created


def _advance(d: "Driver", run: RunState | None, run_id: str, reason: str, max_steps: int,
             events: list[Event]) -> TickOutcome:
    """One leased tick of ``run`` as read with the lease. ``events`` is the inbox as read
    with it too: an event accepted while we hold the lease sends a resume that finds it
    busy, so we tick again after the release."""
    if run is None:
        d.coord.stats.incr("duplicates")
        raise UnknownRunError(run_id)
    if run.status in TERMINAL:
        _after_terminal(d, run, events)
        d.coord.stats.incr("duplicates")
        return TickOutcome(run_id, run.status.value)
    try:
        workflow = _saved_first(d.workflow_for(run))
    except UnknownWorkflowError as exc:
        return _unknown_workflow(d, run, exc)

    before = _fingerprint(run)
    was_waiting = run.status == RunStatus.WAITING
    try:
        with handing_off(run):  # the Runtime's first load takes our read
            for _ in range(MAX_ROUNDS):
                resumed = _apply_inbox(d, workflow, run, events) or _resume_from_child(d, workflow, run)
                # the tick's load takes the state the resume just saved
                with handing_off(resumed) if resumed is not None else nullcontext():
                    run = d.runtime.tick(workflow=workflow, run_id=run_id, max_steps=max_steps)
                if not _has_applicable_input(d, run, events):
                    break
            else:  # more input than one tick applies: yield, and go on in another tick
                d.dispatcher.tick(run_id, reason="continue")
    except (LeaseLostError, RunControlledError):
        raise  # a refused write, not a failing node: the caller ends the tick quietly
    except Exception as exc:
        _tick_failed(d, run_id, exc)
        raise
    entry = known(run_id)
    if entry is None or not entry.born:
        d.marks.clear_attempts(run_id)  # (a run created in this tick has no failed attempts)

    changed = _fingerprint(run) != before
    d.coord.stats.incr("ticks")
    if changed:
        d.coord.stats.incr("transitions")
        if was_waiting:
            d.coord.stats.incr("runs_resumed")
            d.notices.resumed(run_id, run.status.value)
    else:
        d.coord.stats.incr("early" if reason == "timer" else "duplicates")
    _schedule_next(d, run, events)
    return TickOutcome(run_id, run.status.value, changed=changed)


class _SavedFirst(WorkflowSpec):
    """The workflow as the Runtime sees it in a tick: before it takes a node's handler,
    the saves the tick queued are sent (``batch.flush_all``), so no node runs on state
    that is not in the store, and a refused save stops the tick before the node."""

    def get_node(self, node_id: str) -> Any:
        if has_commit():
            flush_all()
        return super().get_node(node_id)


def _saved_first(workflow: WorkflowSpec) -> WorkflowSpec:
    return _SavedFirst(workflow.workflow_id, workflow.entry_node, workflow.nodes)


def _fingerprint(run: RunState) -> tuple[Any, ...]:
    return (run.status, run.current_node, run.updated_at)


# --- what may move a waiting run -------------------------------------------------

def _apply_inbox(d: "Driver", workflow: WorkflowSpec, run: RunState, events: list[Event]) -> RunState | None:
    """Apply the oldest inbox event that matches the run's current wait (at most one);
    applied events leave ``events``. Returns the run as the resume saved it, or None."""
    current = run
    for event in list(events):
        if event.applying_since is not None and event.applying_since != (current.updated_at or ""):
            # A crash came between our resume commit and dropping the event: it was applied.
            d.coord.inbox.done(run.run_id, event.event_id)
            events.remove(event)
            continue
        waiting = current.waiting
        if current.status != RunStatus.WAITING or waiting is None:
            return None
        if event.wait_key is not None and waiting.wait_key != event.wait_key:
            continue  # for a later wait of this run; it stays in the inbox
        d.coord.inbox.mark_applying(event, current.updated_at)
        resumed = d.runtime.resume(workflow=workflow, run_id=run.run_id, wait_key=waiting.wait_key,
                                   payload=event.payload, max_steps=0)
        d.coord.inbox.done(run.run_id, event.event_id)
        events.remove(event)
        d.coord.stats.incr("events_applied")
        return resumed
    return None


def _child_id(run: RunState) -> str | None:
    waiting = run.waiting
    if run.status != RunStatus.WAITING or waiting is None or waiting.reason != WaitReason.SUBWORKFLOW:
        return None
    details = waiting.details or {}
    child = details.get("sub_run_id")
    if not child and waiting.wait_key and waiting.wait_key.startswith("subworkflow:"):
        child = waiting.wait_key.split(":", 1)[1]
    return str(child) if child else None


def child_result(child: RunState) -> dict[str, Any]:
    """The payload a parent waiting on ``child`` is resumed with (as the gateway does)."""
    out = dict(child.output) if isinstance(child.output, dict) else {"result": child.output}
    if child.status != RunStatus.COMPLETED:
        out.setdefault("success", False)
        if child.status == RunStatus.CANCELLED:
            out.setdefault("cancelled", True)
        out.setdefault("error", child.error)
    return {"sub_run_id": child.run_id, "output": out}


def _resume_from_child(d: "Driver", workflow: WorkflowSpec, run: RunState) -> RunState | None:
    """Resume a parent whose child has ended (nothing else ever does); the run as saved, or None."""
    current = run
    child_id = _child_id(current)
    if child_id is None:
        return None
    child = d.run_store.load(child_id)
    if child is None or child.status not in TERMINAL:
        return None
    assert current.waiting is not None
    resumed = d.runtime.resume(workflow=workflow, run_id=run.run_id, wait_key=current.waiting.wait_key,
                               payload=child_result(child), max_steps=0)
    d.coord.stats.incr("parents_resumed")
    return resumed


def _has_applicable_input(d: "Driver", run: RunState, events: list[Event]) -> bool:
    """After a tick parks the run: is there already an event or a child result for it?"""
    if run.status != RunStatus.WAITING or run.waiting is None:
        return False
    child_id = _child_id(run)
    if child_id is not None:
        child = d.run_store.load(child_id)
        return child is not None and child.status in TERMINAL
    key = run.waiting.wait_key
    return any(e.wait_key in (None, key) for e in events) if key else False


# --- what comes next ----------------------------------------------------------------

def _schedule_next(d: "Driver", run: RunState, events: list[Event]) -> None:
    """Send the messages this run now needs: more ticks, a timer, its child, its parent, listeners."""
    for listener in d.take_listeners():
        d.dispatcher.tick(listener, reason="event")
    if run.status == RunStatus.RUNNING:
        d.dispatcher.tick(run.run_id, reason="continue")  # max_steps used up: yield, then go on
    elif run.status == RunStatus.WAITING:
        arm_timer(d, run)
        child_id = _child_id(run)
        if child_id is not None:
            _drive_child(d, child_id)
    else:
        _after_terminal(d, run, events)


def arm_timer(d: "Driver", run: RunState) -> bool:
    """Send a tick at the run's deadline if it falls within the horizon (once per deadline)."""
    until = run.waiting.until if run.waiting is not None else None
    if run.status != RunStatus.WAITING or not until:
        return False
    plan = timers.plan(until, d.settings.timer_horizon_s, min_eta_s=d.dispatcher.min_eta_s)
    if plan.later:
        return False  # beyond the horizon: the sweep arms it when it comes within
    if not d.coord.timers.arm(run.run_id, until, d.settings.timer_horizon_s + 60):
        return False
    d.coord.stats.incr("timers_armed")
    d.dispatcher.tick(run.run_id, reason="timer", eta=plan.eta)
    return True


def _drive_child(d: "Driver", child_id: str) -> None:
    child = d.run_store.load(child_id)
    if child is None:
        return
    if child.status == RunStatus.RUNNING:
        d.dispatcher.tick(child_id, reason="child")  # an async child nobody else will tick
    elif child.status == RunStatus.WAITING:
        arm_timer(d, child)
    else:
        d.dispatcher.tick(child.parent_run_id or child_id, reason="child")


def _after_terminal(d: "Driver", run: RunState, events: list[Event]) -> None:
    """A run ended: wake its parent, and say what happened to events it never took."""
    if run.parent_run_id:
        parent = d.run_store.load(run.parent_run_id)
        if parent is not None and _child_id(parent) == run.run_id:
            d.dispatcher.tick(run.parent_run_id, reason="child")
    for event in events:
        d.coord.inbox.done(run.run_id, event.event_id)
        d.coord.stats.error(
            f"Run {run.run_id}: ended ({run.status.value}) before event {event.event_id} "
            f"(wait_key {event.wait_key!r}) could be applied"
        )


# --- when things go wrong -------------------------------------------------------------

def _tick_failed(d: "Driver", run_id: str, exc: Exception) -> None:
    """Count a failing tick and send a retry with backoff; after ``tick_max_attempts``
    failures in a row, mark the run FAILED (its parent is then resumed)."""
    attempts = d.marks.add_attempt(run_id)
    d.coord.stats.incr("tick_errors")
    message = f"Run {run_id}: tick failed (attempt {attempts}): {type(exc).__name__}: {exc}"
    d.coord.stats.error(message)
    d.notices.failed(run_id, message)
    if attempts >= d.settings.tick_max_attempts:
        d.fail_run(run_id, f"Tick failed {attempts} times; last error: {type(exc).__name__}: {exc}")
        d.marks.clear_attempts(run_id)
        return
    backoff = min(60.0, 0.5 * 2 ** (attempts - 1))
    d.dispatcher.tick(run_id, reason="retry", eta=datetime.now(timezone.utc) + timedelta(seconds=backoff))


def _unknown_workflow(d: "Driver", run: RunState, exc: UnknownWorkflowError) -> TickOutcome:
    """Keep the run (the sweep retries it); fail it only after the grace period."""
    d.coord.stats.incr("unknown_workflow")
    since = d.marks.unknown_since(run.run_id)
    message = str(exc)
    d.coord.stats.error(message)
    d.notices.failed(run.run_id, message)
    if time.time() - since >= d.settings.unknown_workflow_grace_s:
        d.fail_run(run.run_id, f"{message}; still unknown after {d.settings.unknown_workflow_grace_s:.0f}s")
        d.marks.clear_unknown(run.run_id)
    return TickOutcome(run.run_id, run.status.value, skipped="unknown_workflow")


def _wait_out_short_remainder(d: "Driver", run_id: str) -> None:
    """A timer sent with no ETA (under a second to go) may arrive early: wait out the rest."""
    run = d.run_store.load(run_id)
    if run is None or run.status != RunStatus.WAITING or run.waiting is None or not run.waiting.until:
        return
    remaining = timers.parse_until(run.waiting.until) - time.time()
    if 0 < remaining <= timers.MIN_ETA_S:
        time.sleep(remaining)
