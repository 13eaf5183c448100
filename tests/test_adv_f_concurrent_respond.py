"""Many concurrent ``respond()`` calls on one waiting run.

The seed (AbstractRuntime's own ScheduledRuntime) lets exactly one of them through and
refuses the others (``ValueError``: the run is not waiting any more). The embedded mode
claims the seed's behaviour; its check ("an event for this wait is already queued",
``Driver._already_answered``) reads the inbox and then stores the event in a second step,
so on the Redis store several callers pass the check together: each ``respond()`` returns
the run COMPLETED as if its answer were taken, while only one answer was applied and the
others were dropped when the run ended (a line in ``stats.errors``).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import Settings, create_scheduled_runtime
from tests import workflows_adv_f as wf
from tests.conftest import STORE_URL

pytestmark = pytest.mark.timeout(120)

CALLERS = 8
TRIALS = 10


def race_respond(sr: Any, run_id: str) -> list[tuple[int, Any]]:
    """``CALLERS`` threads answer the run at once; returns (caller, state or error)."""
    barrier = threading.Barrier(CALLERS)
    out: list[tuple[int, Any]] = []
    lock = threading.Lock()

    def answer(i: int) -> None:
        barrier.wait()
        try:
            result: Any = sr.respond(run_id, {"who": i})
        except Exception as exc:  # the seed's refusal
            result = exc
        with lock:
            out.append((i, result))

    threads = [threading.Thread(target=answer, args=(i,)) for i in range(CALLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_the_seeds_scheduled_runtime_lets_one_of_many_concurrent_responds_through() -> None:
    """The reference behaviour, on AbstractRuntime's own ScheduledRuntime."""
    from abstractruntime import create_scheduled_runtime as seed_runtime

    spec = wf.build_registry().get("af-ask")
    sr = seed_runtime(workflows=[spec])
    try:
        for _ in range(3):
            run_id, state = sr.run(spec)
            assert state.status == RunStatus.WAITING
            answered = [i for i, r in race_respond(sr, run_id) if not isinstance(r, Exception)]
            assert len(answered) == 1
            assert sr.get_state(run_id).output == {"answer": {"who": answered[0]}}
    finally:
        sr.stop()


def test_embedded_on_the_redis_store_only_the_respond_whose_answer_is_applied_returns_normally(prefix: str) -> None:
    spec = wf.build_registry().get("af-ask")
    sr = create_scheduled_runtime(workflows=[spec], settings=Settings(store_url=STORE_URL, key_prefix=prefix))
    try:
        for _ in range(TRIALS):
            run_id, state = sr.run(spec)
            assert state.status == RunStatus.WAITING
            results = race_respond(sr, run_id)
            final = sr.get_state(run_id)
            assert final.status == RunStatus.COMPLETED
            applied = final.output["answer"]["who"]
            told_applied = sorted(i for i, r in results if not isinstance(r, Exception))
            assert told_applied == [applied], (told_applied, applied, sr.stats.errors[-3:])
    finally:
        sr.stop()
