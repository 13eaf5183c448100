"""The example's onboarding workflow tested with abstractruntime-celery's pytest kit (the
plugin loads itself): no web app, no sleeps; the nodes run for real (their emails land in
the example's Redis outbox). README: "Testing your workflows"."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis
from abstractruntime import Effect, EffectType, RunState, StepPlan, WorkflowSpec

from abstractruntime_celery.testing import assert_ledger

pytestmark = pytest.mark.timeout(60)
WELCOME = "Welcome! Your account waits for approval."
ACTIVE = "Your account is active."
REMINDER = "Reminder: your account still waits for approval."


@pytest.fixture
def arc_registry(api_env: dict[str, str]) -> Any:
    """The kit runs the example's own registry (api_env: ``apishop`` reads its environment at import)."""
    from apishop.workflows import registry

    return registry


@pytest.fixture
def onboarding(arc_registry: Any) -> WorkflowSpec:
    return arc_registry.get_or_raise("onboarding")


def emails_of(env: dict[str, str], run_id: str) -> list[str]:
    raw = redis.Redis.from_url(env["APISHOP_OUTBOX_URL"]).lrange(env["APISHOP_OUTBOX_KEY"], 0, -1)
    return [m["subject"] for m in map(json.loads, raw) if m["run_id"] == run_id]


def test_an_approved_signup_is_welcomed_then_activated(arc_runtime: Any, arc_deliver: Any, onboarding: WorkflowSpec,
                                                        api_env: dict[str, str]) -> None:
    run_id, state = arc_runtime.run(onboarding, vars={"email": "ada@example.com"})
    assert state.status.value == "waiting" and state.waiting.prompt == "Approve ada@example.com?"
    assert emails_of(api_env, run_id) == [WELCOME]

    state = arc_deliver(run_id, state.waiting.wait_key, {"approved": True})
    assert state.status.value == "completed"
    assert state.output == {"email": "ada@example.com", "approved": True}
    assert emails_of(api_env, run_id) == [WELCOME, ACTIVE]
    # (welcome only moves on: AbstractRuntime records no step for it)
    assert_ledger(arc_runtime, run_id, ["approval:ask_user", "activate"])


def test_on_a_real_worker_a_rejected_signup_is_not_activated(arc_worker_runtime: Any, arc_deliver: Any,
                                                              onboarding: WorkflowSpec,
                                                              api_env: dict[str, str]) -> None:
    # The same test through a broker (kombu's memory://) and a Celery worker in this process.
    run_id, state = arc_worker_runtime.run(onboarding, vars={"email": "bob@example.com"})
    assert state.status.value == "waiting"
    state = arc_deliver(run_id, state.waiting.wait_key, {"approved": False})
    assert state.output == {"email": "bob@example.com", "approved": False}
    assert emails_of(api_env, run_id) == [WELCOME]
    assert_ledger(arc_worker_runtime, run_id, ["approval:ask_user", {"node_id": "activate", "status": "completed"}])


def test_the_approval_waits_for_a_human_however_long_it_takes(arc_runtime: Any, arc_clock: Any,
                                                               arc_deliver: Any, onboarding: WorkflowSpec) -> None:
    run_id, state = arc_runtime.run(onboarding, vars={"email": "eve@example.com"})
    assert arc_clock.advance(days=30) == []  # an ask_user wait has no deadline: no timer fires
    assert arc_runtime.get_state(run_id).status.value == "waiting"
    assert arc_deliver(run_id, state.waiting.wait_key, {"approved": True}).status.value == "completed"


# A timer: a reminder a day after sign-up, a workflow of this test file beside the example's.
def remind_later(run: RunState, ctx: Any) -> StepPlan:
    until = (datetime.now(timezone.utc) + timedelta(hours=24)).isoformat()  # the node's clock: the kit's
    return StepPlan(node_id="wait", effect=Effect(EffectType.WAIT_UNTIL, {"until": until}), next_node="remind")


def remind(run: RunState, ctx: Any) -> StepPlan:
    from apishop.workflows import send_email  # (imported once api_env has set its environment)

    send_email(run, run.vars["email"], REMINDER)
    return StepPlan(node_id="remind", complete_output={"reminded": run.vars["email"]})


reminder = WorkflowSpec(workflow_id="reminder", entry_node="wait", nodes={"wait": remind_later, "remind": remind})


class TestReminderTimer:
    @pytest.fixture
    def arc_registry(self, api_env: dict[str, str]) -> Any:
        from apishop.workflows import registry

        return [registry.get_or_raise("onboarding"), reminder]

    def test_the_reminder_goes_out_a_day_later(self, arc_runtime: Any, arc_clock: Any,
                                               api_env: dict[str, str]) -> None:
        runtime = arc_runtime  # (arc_worker_runtime takes the same test, through a real worker)
        run_id, _ = runtime.run(reminder, vars={"email": "ada@example.com"})
        assert arc_clock.advance(hours=23) == []
        assert emails_of(api_env, run_id) == []
        assert arc_clock.advance(hours=1) == [run_id]  # a day passed in no time
        assert runtime.get_state(run_id).output == {"reminded": "ada@example.com"}
        assert emails_of(api_env, run_id) == [REMINDER]
        assert_ledger(runtime, run_id, ["wait:wait_until", "remind"])
