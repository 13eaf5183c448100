"""A user's tests written against the test kit's fixtures (tests/test_testkit.py runs
them in a subprocess pytest, the plugin loaded through its pytest11 entry point)."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import pytest
from user_workflows import ALL, approval, drip, nap, trial

from abstractruntime_celery.testing import assert_ledger

REDIS = os.environ.get("ARC_KIT_REDIS", "")
AMQP = os.environ.get("ARC_KIT_AMQP", "")


@pytest.fixture
def arc_registry() -> Any:
    return ALL


@pytest.fixture(params=["embedded", "worker"])
def runtime(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("arc_runtime" if request.param == "embedded" else "arc_worker_runtime")


def test_a_day_passes_in_no_time(runtime: Any, arc_clock: Any) -> None:
    run_id, state = runtime.run(nap)
    assert state.status.value == "waiting"
    assert arc_clock.advance(hours=23, minutes=59) == []
    assert runtime.get_state(run_id).status.value == "waiting"
    assert arc_clock.advance(minutes=1) == [run_id]
    state = runtime.get_state(run_id)
    assert state.status.value == "completed"
    # the node's clock moved with the test's: it woke at (or just after) its own deadline
    assert 0 <= (datetime.fromisoformat(state.output["woke"])
                 - datetime.fromisoformat(state.output["until"])).total_seconds() < 60
    assert_ledger(runtime, run_id, ["start:wait_until", "done"])


def test_timers_fire_in_deadline_order(arc_runtime: Any, arc_clock: Any) -> None:
    late, _ = arc_runtime.run(nap, vars={"hours": 5})
    early, _ = arc_runtime.run(nap, vars={"hours": 2})
    beyond, _ = arc_runtime.run(nap, vars={"hours": 30})
    assert arc_clock.advance(days=1) == [early, late]
    assert arc_runtime.get_state(beyond).status.value == "waiting"


def test_timers_set_by_fired_nodes_fire_in_the_same_step(arc_runtime: Any, arc_clock: Any) -> None:
    run_id, _ = arc_runtime.run(drip)
    assert arc_clock.advance(hours=5) == [run_id] * 3
    state = arc_runtime.get_state(run_id)
    assert state.status.value == "completed" and state.output["drops"] == 3
    hours = [datetime.fromisoformat(t) for t in state.output["at"]]
    assert [round((b - a).total_seconds() / 3600) for a, b in zip(hours, hours[1:])] == [1, 1]
    assert_ledger(arc_runtime, run_id, ["wait:wait_until"] * 3 + ["wait"])  # (a node with no effect leaves no step)


def test_deliver_runs_what_the_event_causes(arc_runtime: Any, arc_deliver: Any, arc_clock: Any) -> None:
    runtime = arc_runtime  # (on a worker: TestOnRedis)
    run_id, _ = runtime.run(trial)
    state = arc_deliver(run_id, "go", {"now": True})
    assert state.status.value == "waiting" and state.waiting.reason.value == "subworkflow"
    arc_clock.advance(days=1)  # the child's day passes; it ends and its parent is resumed
    state = runtime.get_state(run_id)
    assert state.status.value == "completed", state
    assert_ledger(runtime, run_id, ["ask:wait_event", "spawn:start_subworkflow", "joined"])


def test_deliver_alone_makes_the_runtime(arc_deliver: Any, arc_runtime: Any) -> None:
    run_id, _ = arc_runtime.run(approval)
    assert arc_deliver(run_id, "approval", {"ok": True}).output == {"approved": True}


def test_ledger_mismatch_reads_plainly(arc_runtime: Any) -> None:
    run_id, _ = arc_runtime.run(approval)
    with pytest.raises(AssertionError) as caught:
        assert_ledger(arc_runtime, run_id, ["ask", "decide"])
    text = str(caught.value)
    assert f"ledger of run {run_id}" in text
    assert "2  decide" in text and "<--" in text and "ask:wait_event (waiting)" in text


@pytest.mark.skipif(not REDIS, reason="ARC_KIT_REDIS is not set")
class TestOnRedis:
    @pytest.fixture
    def arc_broker_url(self) -> str:
        return f"{REDIS}/9"

    @pytest.fixture
    def arc_store_url(self) -> str:
        return f"{REDIS}/10"

    def test_child_and_timer_through_redis(self, arc_worker_runtime: Any, arc_deliver: Any,
                                           arc_clock: Any) -> None:
        run_id, _ = arc_worker_runtime.run(trial)
        state = arc_deliver(run_id, "go", {})
        assert state.status.value == "waiting" and state.waiting.reason.value == "subworkflow"
        child = state.waiting.details["sub_run_id"]
        assert arc_clock.advance(days=1) == [child]
        assert arc_worker_runtime.get_state(run_id).status.value == "completed"
        assert_ledger(arc_worker_runtime, run_id, ["ask:wait_event", "spawn:start_subworkflow", "joined"])


@pytest.mark.skipif(not (AMQP and REDIS), reason="ARC_KIT_AMQP is not set")
class TestOnRabbitMQ:
    @pytest.fixture
    def arc_broker_url(self) -> str:
        return AMQP

    @pytest.fixture
    def arc_store_url(self) -> str:
        return f"{REDIS}/10"

    @pytest.fixture
    def arc_settings(self) -> Any:
        from abstractruntime_celery import Settings

        return Settings(queue_type=os.environ.get("ARC_KIT_QUEUE_TYPE", ""))

    def test_a_day_and_a_child_through_rabbitmq(self, arc_worker_runtime: Any, arc_deliver: Any,
                                               arc_clock: Any) -> None:
        nap_id, _ = arc_worker_runtime.run(nap, vars={"hours": 2})
        run_id, _ = arc_worker_runtime.run(trial)
        child = arc_deliver(run_id, "go", {}).waiting.details["sub_run_id"]
        assert arc_clock.advance(days=1) == [nap_id, child]
        assert arc_worker_runtime.get_state(run_id).status.value == "completed"
        assert arc_worker_runtime.get_state(nap_id).status.value == "completed"
