"""Start an onboarding run, read it, answer its approval."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from abstractruntime_celery import PayloadError, RunNotWaitingError, UnknownRunError

from . import arc

bp = Blueprint("shop", __name__)


@bp.post("/signups")
def signup() -> Any:
    email = str((request.get_json(silent=True) or {}).get("email", ""))
    if "@" not in email:
        return {"error": "email required"}, 400
    return {"run_id": arc.start_run("onboarding", {"email": email})}, 201


@bp.get("/runs/<run_id>")
def run_status(run_id: str) -> Any:
    try:
        state = arc.runtime.get_state(run_id)
    except (UnknownRunError, PayloadError):
        return {"error": "no such run"}, 404
    waiting = state.waiting
    return {"run_id": run_id, "status": state.status.value, "output": state.output,
            "prompt": waiting.prompt if waiting is not None else None}


@bp.post("/runs/<run_id>/answer")
def answer(run_id: str) -> Any:
    approved = bool((request.get_json(silent=True) or {}).get("approved"))
    try:
        arc.runtime.respond(run_id, {"approved": approved}, wait=False)  # durable when it returns
    except (UnknownRunError, PayloadError):
        return {"error": "no such run"}, 404
    except RunNotWaitingError as exc:
        return {"error": str(exc)}, 409
    return {"run_id": run_id, "answered": {"approved": approved}}, 202
