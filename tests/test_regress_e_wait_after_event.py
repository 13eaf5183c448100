"""``resume_event(wait=True)`` / ``RunHandle.wait()`` never return a state from before the event
was applied (regression, branch regress-e).

Before: the wait loaded the run, then checked whether the event had left the inbox; a
worker's commit between the two reads made it return the old state as settled (4 in
600 with real worker processes). Now the run, its lease and the event's presence are
read in one MULTI.

Real ``celery worker`` processes apply the events; the workflow waits on the same key
again after each one, so a stale state looks settled (WAITING on "k") and only its
payload tells it apart. Several callers at once, each on its own run.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from devkit.procs import Cluster, worker_cluster
from tests.conftest import BROKER_URL, FX_URL, STORE_URL, make_app, make_settings
from tests.workflows_regress_e import registry

RUNS = 6
EVENTS_PER_RUN = 80  # 480 events in all (d599363 returned 2-4 stale states per 300)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    settings = make_settings(f"wae{uuid.uuid4().hex[:8]}:", registry="tests.workflows_regress_e:registry")
    with worker_cluster(settings, tmp_path, request, ["w1", "w2"], BROKER_URL, STORE_URL, FX_URL) as c:
        yield c


def test_every_state_resume_event_returns_shows_its_event_applied(cluster: Cluster) -> None:
    settings = cluster.settings
    sr = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry, auto_start=False)
    try:
        run_ids = []
        for _ in range(RUNS):
            run_id, state = sr.run(registry.get("loop"), vars={"key": "k"}, timeout=60)
            assert state.status == RunStatus.WAITING and state.waiting.wait_key == "k"
            run_ids.append(run_id)
        stale: list[tuple[str, int, Any, Any]] = []
        errors: list[BaseException] = []
        start = threading.Barrier(RUNS)

        def caller(run_id: str) -> None:
            try:
                start.wait()
                for i in range(EVENTS_PER_RUN):
                    state = sr.resume_event(run_id=run_id, wait_key="k", payload={"i": i}, timeout=60)
                    if state.vars.get("last") != {"i": i} or state.vars.get("n") != i + 1:
                        stale.append((run_id, i, state.vars.get("last"), state.vars.get("n")))
                    # (each event waits for the one before: a stale return sends the next one early,
                    # and the check above sees it next time round too)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=caller, args=(r,)) for r in run_ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        assert not any(t.is_alive() for t in threads)
        assert errors == [], errors[:3]
        assert stale == [], f"{len(stale)} of {RUNS * EVENTS_PER_RUN} returned states were from before " \
                            f"their event: {stale[:5]}"
        for run_id in run_ids:  # and nothing was lost or applied twice
            final = sr.get_state(run_id)
            assert final.vars["n"] == EVENTS_PER_RUN and final.vars["last"] == {"i": EVENTS_PER_RUN - 1}
    finally:
        sr.stop()
