"""Two built-in effects need the driver's help on a fleet; we wrap their handlers.

* ``EMIT_EVENT`` resumes listener runs with ``max_steps=0`` and leaves them
  RUNNING; the list is only in the effect's result, so we note it in the tick
  context and the tick sends them ticks after its release.
* ``START_SUBWORKFLOW``:
  - without a ``run_id`` it makes a fresh child id each time it runs, so a spawn
    node run again after a crash would start a second child. We give it a
    deterministic id (parent, node, effect sequence) and a creation digest of
    (id, workflow, parent) that leaves the vars out, so the re-run finds the
    first child whatever vars it builds now (a timestamp, a uuid);
  - a synchronous child is ticked inside the parent's tick: we take the child's
    own lease around it, so no other worker ticks it meanwhile; if another holds
    it, the parent waits on the child instead (as ``async`` + ``wait``);
  - an ``async`` child without ``wait`` is noted, and the tick sends it a tick.

These wrappers run inside ``Runtime.tick``; they find the tick with ``current()``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

from abstractruntime import EffectType, RunState, RunStatus

from . import tracing
from .context import TickContext, current
from .lease import LeaseKeeper, Leases
from .runstate import child_digest, child_result, child_run_id

log = logging.getLogger(__name__)

Handler = Callable[[RunState, Any, Any], Any]


def install(runtime: Any, leases: Leases, keeper: LeaseKeeper) -> None:
    """Wrap the runtime's EMIT_EVENT and START_SUBWORKFLOW handlers (once)."""
    handlers = getattr(runtime, "_handlers", None)
    if not isinstance(handlers, dict) or getattr(runtime, "_arc_effects_installed", False):
        return
    emit, spawn = handlers.get(EffectType.EMIT_EVENT), handlers.get(EffectType.START_SUBWORKFLOW)
    if emit is not None:
        handlers[EffectType.EMIT_EVENT] = _emit_event(emit)
    if spawn is not None:
        handlers[EffectType.START_SUBWORKFLOW] = _start_subworkflow(spawn, leases, keeper, runtime.run_store)
    runtime._arc_effects_installed = True


def _emit_event(emit: Handler) -> Handler:
    def emit_event(run: RunState, effect: Any, default_next_node: Any) -> Any:
        outcome = emit(run, effect, default_next_node)
        ctx = current()
        delivered = (getattr(outcome, "result", None) or {}).get("delivered_to") or []
        if ctx is not None:
            ctx.listeners.extend(str(r) for r in delivered)
        return outcome

    return emit_event


def _with_child_id(run: RunState, effect: Any) -> Any:
    payload = dict(effect.payload) if isinstance(effect.payload, dict) else None
    if payload is None or payload.get("run_id"):
        return effect
    child = child_run_id(run)
    child_vars = dict(payload.get("vars") or {}) if isinstance(payload.get("vars"), dict) else {}
    meta = dict(child_vars.get("_meta") or {}) if isinstance(child_vars.get("_meta"), dict) else {}
    meta.setdefault("creation_digest", child_digest(child, str(payload.get("workflow_id")), run.run_id))
    child_vars["_meta"] = meta
    payload.update(run_id=child, vars=child_vars)
    return dataclasses.replace(effect, payload=payload)


def _start_subworkflow(spawn: Handler, leases: Leases, keeper: LeaseKeeper, store: Any) -> Handler:
    def start_subworkflow(run: RunState, effect: Any, default_next_node: Any) -> Any:
        effect = _with_child_id(run, effect)
        ctx = current()
        payload = effect.payload if isinstance(effect.payload, dict) else {}
        child_id = payload.get("run_id")
        if ctx is None or not isinstance(child_id, str):
            return spawn(run, effect, default_next_node)
        if not payload.get("async"):
            outcome = _sync_child(ctx, (spawn, leases, keeper, store), run, effect, default_next_node)
            tracing.child_started(ctx, child_id)  # (its later ticks join the parent's trace)
            return outcome
        outcome = spawn(run, effect, default_next_node)
        tracing.child_started(ctx, child_id)
        result = getattr(outcome, "result", None)
        if not payload.get("wait") and isinstance(result, dict) and result.get("async"):
            ctx.children.append(str(result.get("sub_run_id") or child_id))
        return outcome

    return start_subworkflow


def _controlled_child(spawn: Handler, store: Any, run: RunState, effect: Any, default_next_node: Any,
                      child_id: str) -> Any:
    """A synchronous child that a cancel or pause stopped while it ran inline (its save was
    refused, so AbstractRuntime saw a failing child): cancelled, the parent takes its result
    as AbstractRuntime gives a cancelled child's; paused, the parent waits on it."""
    from abstractruntime.core.runtime import EffectOutcome

    child = store.load(child_id)
    if child is not None and child.status == RunStatus.CANCELLED:
        return EffectOutcome.completed(child_result(child))
    waited = dataclasses.replace(effect, payload=dict(effect.payload, **{"async": True, "wait": True}))
    return spawn(run, waited, default_next_node)


def _sync_child(ctx: TickContext, services: tuple[Handler, Leases, LeaseKeeper, Any], run: RunState,
                effect: Any, default_next_node: Any) -> Any:
    """Tick a synchronous child inline under its own lease; if another process holds it,
    wait on the child instead (the parent is resumed when it ends)."""
    spawn, leases, keeper, store = services
    child_id = effect.payload["run_id"]
    lease = leases.acquire(child_id)
    if lease is None:
        log.info("run %s: child %s is leased elsewhere; waiting on it instead of ticking it inline",
                 run.run_id, child_id)
        waited = dataclasses.replace(effect, payload=dict(effect.payload, **{"async": True, "wait": True}))
        return spawn(run, waited, default_next_node)
    ctx.fences[child_id] = lease.fence
    keeper.hold(lease)
    try:
        outcome = spawn(run, effect, default_next_node)
        ctx.queue.flush()  # the child's queued appends land while its lease holds
        if child_id in ctx.controlled:  # cancelled or paused while it ran: its save was refused
            return _controlled_child(spawn, store, run, effect, default_next_node, child_id)
        return outcome
    finally:
        keeper.drop(lease)
        ctx.fences.pop(child_id, None)
        child = TickContext(child_id)  # its own release: a tick asked meanwhile is the child's
        if leases.release(lease, child):
            ctx.sends.append((child_id, "asked", None, child.next_id))
