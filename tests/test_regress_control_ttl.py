"""``create_scheduled_runtime`` honours ``control_ttl_s`` (it used to open its stores
with the default and ignore the setting).

``control_ttl_s=0`` means: a tick reads the run's cancel/pause state from the store
before each step it commits, instead of trusting what it confirmed a moment ago. So a
cancel that lands while the last node runs is seen before that node's completion is
recorded: the ledger never says the run completed, and no save of the tick has to be
refused. With the default (0.25 s) the tick trusts its recent confirmation: the ledger
gets the node's completion and a "completed" status event for a run that ends CANCELLED,
and the tick's save is refused by the store (``stats.controlled``).
The ticks here run in this process (the embedded mode, on the Redis store).
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest
from abstractruntime import RunState, RunStatus, StepPlan, WorkflowSpec

from abstractruntime_celery import Settings, create_scheduled_runtime
from tests.conftest import STORE_URL

pytestmark = pytest.mark.timeout(60)


def claims_completion(rec: dict[str, Any]) -> bool:
    """A ledger record that says the run completed: the node's completion (it carries the
    output) or the run's terminal status event "completed"."""
    result = rec.get("result") if isinstance(rec.get("result"), dict) else {}
    return result.get("output") == {"finished": True} \
        or str(rec.get("idempotency_key") or "").endswith("terminal_status:completed")


@pytest.fixture
def cancelled_in_its_last_node(prefix: str) -> Iterator[Any]:
    """``run(control_ttl_s)``: a one-node run whose node has the run cancelled (through the
    public ``cancel_run``, from another thread) before it returns its output; returns
    (runtime, run id, final state)."""
    made: list[Any] = []

    def run(control_ttl_s: float) -> tuple[Any, str, RunState]:
        holder: dict[str, Any] = {}

        def only(run: RunState, ctx: Any) -> StepPlan:
            operator = threading.Thread(target=holder["sr"].cancel_run, args=(run.run_id,))
            operator.start()
            operator.join(10)
            return StepPlan(node_id="only", complete_output={"finished": True})

        wf = WorkflowSpec("rc-cancelled-in-node", "only", {"only": only})
        sr = create_scheduled_runtime(workflows=[wf], auto_start=False,
                                      settings=Settings(store_url=STORE_URL, key_prefix=prefix,
                                                        control_ttl_s=control_ttl_s))
        made.append(sr)
        holder["sr"] = sr
        run_id, state = sr.run(wf)
        return sr, run_id, sr.get_state(run_id)

    yield run
    for sr in made:
        sr.stop()


def test_create_scheduled_runtime_honours_control_ttl_s_zero_a_cancel_in_the_last_node_is_seen_before_its_completion_is_recorded(
        cancelled_in_its_last_node: Any) -> None:
    sr, run_id, final = cancelled_in_its_last_node(0.0)
    assert final.status == RunStatus.CANCELLED
    assert final.output is None or final.output.get("finished") is None
    ledger = sr.get_ledger(run_id)
    assert [rec for rec in ledger if claims_completion(rec)] == [], ledger
    assert sr.stats.controlled == 0
