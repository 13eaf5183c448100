"""What a run's state says, read the same way everywhere: is it over, paused, waiting
on a child, which event can it take now. Nothing here touches a store."""

from __future__ import annotations

import hashlib
from typing import Any, Optional

from abstractruntime import RunState, RunStatus, WaitReason

from .inbox import Event
from .stores.redis.codec import is_paused

TERMINAL = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
#: Wait reasons an event is addressed to (the only ones a strict event may answer).
EVENT_WAITS = (WaitReason.EVENT, WaitReason.USER, WaitReason.JOB)
#: Set in a cancelled run's ``vars._runtime.control`` by ``cancel_with_children``: its
#: children are cancelled too, including any a node still running spawns.
CANCEL_CHILDREN = "cancel_children"
#: Child ids we make are ``sub-`` and 32 hex digits; callers may not choose such an id.
CHILD_ID_PREFIX = "sub-"


def paused(run: RunState) -> bool:
    return bool(is_paused(run.vars))


def is_pause_wait(run: RunState) -> bool:
    """The synthetic wait ``pause_run`` creates for a RUNNING run (nothing may answer it)."""
    waiting = run.waiting
    return (waiting is not None and waiting.reason == WaitReason.USER
            and waiting.wait_key == f"pause:{run.run_id}")


def control_flag(run: RunState, name: str) -> Any:
    runtime_ns = run.vars.get("_runtime") if isinstance(run.vars, dict) else None
    control = runtime_ns.get("control") if isinstance(runtime_ns, dict) else None
    return control.get(name) if isinstance(control, dict) else None


def child_of(run: RunState) -> Optional[str]:
    """The child a WAITING(SUBWORKFLOW) run waits on, or None."""
    waiting = run.waiting
    if run.status != RunStatus.WAITING or waiting is None or waiting.reason != WaitReason.SUBWORKFLOW:
        return None
    child = (waiting.details or {}).get("sub_run_id")
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


def child_run_id(parent: RunState) -> str:
    """A child id that is the same each time the parent's current effect is executed,
    so a spawn node run again after a crash finds the child the first attempt made."""
    runtime_ns = parent.vars.get("_runtime") if isinstance(parent.vars, dict) else None
    seq = runtime_ns.get("effect_seq", 0) if isinstance(runtime_ns, dict) else 0
    digest = hashlib.sha256(f"{parent.run_id}|{parent.current_node}|{seq}".encode()).hexdigest()
    return f"{CHILD_ID_PREFIX}{digest[:32]}"


def child_digest(child_id: str, workflow_id: str, parent_id: str) -> str:
    """The creation digest of a child we spawn: its id, workflow and parent, not its vars,
    so a spawn run again with other vars (a timestamp, a uuid) finds its first child."""
    text = f"{child_id}|{workflow_id}|{parent_id}"
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def takes(run: RunState, event: Event) -> bool:
    """Can ``run`` take ``event`` now? (``lua/inbox_read.lua`` applies the same rule.)"""
    waiting = run.waiting
    if run.status != RunStatus.WAITING or waiting is None or paused(run):
        return False
    if event.wait_key is None:
        return not event.strict
    if waiting.wait_key != event.wait_key:
        return False
    return not event.strict or waiting.reason in EVENT_WAITS
