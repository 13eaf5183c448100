"""The app's workflows. Workers import this module (ABSTRACTRUNTIME_CELERY_REGISTRY names it):
start the worker where ``flaskshop`` is importable (this directory, or PYTHONPATH). A worker
that cannot import it refuses to start.

Onboarding: send a welcome email, ask a human to approve, then activate (or not).
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis
from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec

from abstractruntime_celery import WorkflowRegistry


def send_email(run: RunState, to: str, subject: str) -> None:
    """A stand-in for your mailer: appends the message to a Redis list you can read."""
    client = redis.Redis.from_url(os.environ.get("FLASKSHOP_OUTBOX_URL", "redis://127.0.0.1:6379/1"))
    client.rpush(os.environ.get("FLASKSHOP_OUTBOX_KEY", "flaskshop:outbox"),
                 json.dumps({"run_id": run.run_id, "to": to, "subject": subject}))


def welcome(run: RunState, ctx: Any) -> StepPlan:
    send_email(run, run.vars["email"], "Welcome! Your account waits for approval.")
    return StepPlan(node_id="welcome", next_node="approval")


def approval(run: RunState, ctx: Any) -> StepPlan:
    prompt = f"Approve {run.vars['email']}?"
    return StepPlan(node_id="approval", effect=Effect(EffectType.ASK_USER, {"prompt": prompt}, result_key="decision"),
                    next_node="activate")


def activate(run: RunState, ctx: Any) -> StepPlan:
    approved = bool((run.vars.get("decision") or {}).get("approved"))
    if approved:
        send_email(run, run.vars["email"], "Your account is active.")
    return StepPlan(node_id="activate", complete_output={"email": run.vars["email"], "approved": approved})


registry = WorkflowRegistry()
registry.register(WorkflowSpec(workflow_id="onboarding", entry_node="welcome",
                               nodes={"welcome": welcome, "approval": approval, "activate": activate}))
