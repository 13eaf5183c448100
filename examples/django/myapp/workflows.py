"""The project's workflows. Workers import this module (CELERY_ABSTRACTRUNTIME_REGISTRY names
it), so it must be importable where the worker runs: start the worker from this directory (or
put the project on PYTHONPATH). A worker that cannot import it refuses to start.

Onboarding: send a welcome email, ask a human to approve, then activate (or not).
Each node runs once per run; its side effects are real, so they sit in nodes, not at import.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec
from django.conf import settings

from abstractruntime_celery import WorkflowRegistry


def send_email(run: RunState, to: str, subject: str) -> None:
    """A stand-in for your mailer: appends the message to a Redis list you can read."""
    client = redis.Redis.from_url(settings.OUTBOX_URL)
    client.rpush(settings.OUTBOX_KEY, json.dumps({"run_id": run.run_id, "to": to, "subject": subject}))


def welcome(run: RunState, ctx: Any) -> StepPlan:
    send_email(run, run.vars["email"], "Welcome! Your account waits for approval.")
    return StepPlan(node_id="welcome", next_node="approval")


def approval(run: RunState, ctx: Any) -> StepPlan:
    # Waits (durably, in the store) until the answer view responds; no worker is held meanwhile.
    prompt = f"Approve {run.vars['email']}?"
    return StepPlan(node_id="approval", effect=Effect(EffectType.ASK_USER, {"prompt": prompt}, result_key="decision"),
                    next_node="activate")


def activate(run: RunState, ctx: Any) -> StepPlan:
    approved = bool((run.vars.get("decision") or {}).get("approved"))
    if approved:
        send_email(run, run.vars["email"], "Your account is active.")
    return StepPlan(node_id="activate", complete_output={"email": run.vars["email"], "approved": approved})


onboarding = WorkflowSpec(workflow_id="onboarding", entry_node="welcome",
                          nodes={"welcome": welcome, "approval": approval, "activate": activate})

registry = WorkflowRegistry()
registry.register(onboarding)
