"""The example API: ``uvicorn apishop.main:app``. One runtime for the app's life (the
lifespan), handed to endpoints as a dependency (``sr: Runtime``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from abstractruntime_celery import PayloadError, RunNotWaitingError, UnknownRunError
from abstractruntime_celery.contrib.fastapi import Runtime, runtime_lifespan, start_run

from .celery import app as celery_app

app = FastAPI(lifespan=runtime_lifespan(celery_app))


class SignupIn(BaseModel):
    email: str


class AnswerIn(BaseModel):
    approved: bool


# Plain ``def``: FastAPI runs these in its thread pool, where the runtime's blocking calls belong.
@app.post("/signups", status_code=201)
def signup(body: SignupIn, sr: Runtime) -> dict[str, Any]:
    if "@" not in body.email:
        raise HTTPException(400, "email required")
    return {"run_id": start_run(sr, "onboarding", {"email": body.email})}


@app.get("/runs/{run_id}")
def run_status(run_id: str, sr: Runtime) -> dict[str, Any]:
    try:
        state = sr.get_state(run_id)
    except (UnknownRunError, PayloadError):
        raise HTTPException(404, "no such run") from None
    waiting = state.waiting
    return {"run_id": run_id, "status": state.status.value, "output": state.output,
            "prompt": waiting.prompt if waiting is not None else None}


@app.post("/runs/{run_id}/answer", status_code=202)
def answer(run_id: str, body: AnswerIn, sr: Runtime) -> dict[str, Any]:
    try:
        sr.respond(run_id, {"approved": body.approved}, wait=False)  # durable when it returns
    except (UnknownRunError, PayloadError):
        raise HTTPException(404, "no such run") from None
    except RunNotWaitingError as exc:
        raise HTTPException(409, str(exc)) from None
    return {"run_id": run_id, "answered": {"approved": body.approved}}
