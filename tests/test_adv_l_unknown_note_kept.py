"""Adversarial: since round K (and round J on the shared Redis store) the failure notes are
cleared only by a tick that *moved* the run. That includes the unknown-workflow note, so a
tick by a worker that knows the workflow no longer clears it when the run has nothing to do
(a WAITING run ticked by the sweep or a duplicate message).

Rolling deploy: a worker of the old deploy sees a run that waits on an event (a tick from
the sweep, say): it notes when it first saw it. Workers of the new deploy tick
the run after that and know its workflow, but the run is waiting, so nothing moves and the
note stays. Once ``unknown_workflow_grace_s`` has passed since that first sighting, the next
tick that lands on the old worker marks the healthy run FAILED (terminal: the event that
comes later is refused).

docs/reliability.md (rolling deploy, round G) says what holds: "A tick by a worker that
knows the workflow clears the run's unknown-workflow note and its failed attempts. A stale
worker that sees the run later leaves it as it is." (The README's wording, "without a worker
that knows it moving it", reads as the new rule; either way the run was never unknown to the
deploy that ticks it.)

At fault: tick.py ``Ticker._step``: ``if changed and ...`` guards the clear of *all* notes,
the unknown-workflow note included (shared: ``ctx.clear_marks``; non-shared:
``marks.moved``); only the attempts and backoff need a move (round K's pause finding).

Deterministic, in-process: two drivers on one Redis store, one without the workflow.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from tests._dispatchers import Recorder
from tests.conftest import STORE_URL, make_settings
from tests.workflows_adv_g import registry, registry_without_two_events

pytestmark = pytest.mark.timeout(60)
GRACE_S = 1.0


def _settings(kind: str, prefix: str, tmp_path: Path) -> Any:
    extra: dict[str, Any] = {} if kind == "redis" else \
        {"store_url": f"sqlite:///{tmp_path}/runs.db", "coord_url": STORE_URL}
    return make_settings(prefix, unknown_workflow_grace_s=GRACE_S, **extra)


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_a_waiting_run_ticked_by_the_new_deploy_is_not_failed_by_a_stale_worker(
        kind: str, prefix: str, tmp_path: Path) -> None:
    settings = _settings(kind, prefix, tmp_path)
    new = build(settings, registry, Recorder(), distributed=True)
    old = build(settings, registry_without_two_events, Recorder(), distributed=True)
    run_id = new.start_run("ag-two-events", vars={"fx": f"{prefix}fx"}, dispatch=False)
    new.tick(run_id, reason="start")
    assert new.load(run_id).status == RunStatus.WAITING  # on k1

    assert old.tick(run_id, reason="sweep").skipped == "unknown_workflow"  # the old deploy notes it
    out = new.tick(run_id, reason="sweep")  # the new deploy ticks it (the sweep, a duplicate): it knows the workflow
    assert out.skipped is None and not out.changed
    note = new.coord.client.get(new.coord.keys.unknown(run_id))

    time.sleep(GRACE_S + 0.5)  # (the run waits for its event, as long as it takes)
    old.tick(run_id, reason="sweep")  # one more tick lands on a stale worker
    run = new.load(run_id)
    assert run.status == RunStatus.WAITING, (
        f"a worker that knows the workflow ticked the run after the stale worker first saw it (note left: "
        f"{note!r}); the stale worker then marked the waiting run {run.status.value}: {run.error}")


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_held_a_run_the_new_deploy_moves_is_not_failed_by_a_stale_worker(
        kind: str, prefix: str, tmp_path: Path) -> None:
    settings = _settings(kind, prefix, tmp_path)
    new = build(settings, registry, Recorder(), distributed=True)
    old = build(settings, registry_without_two_events, Recorder(), distributed=True)
    run_id = new.start_run("ag-two-events", vars={"fx": f"{prefix}fx"}, dispatch=False)
    new.tick(run_id, reason="start")
    assert old.tick(run_id, reason="sweep").skipped == "unknown_workflow"
    new.accept_event(run_id, "k1", {"n": 1}, dispatch=False)
    assert new.tick(run_id, reason="event").changed  # moved: to k2
    assert new.coord.client.get(new.coord.keys.unknown(run_id)) is None
    time.sleep(GRACE_S + 0.5)
    old.tick(run_id, reason="sweep")
    assert new.load(run_id).status == RunStatus.WAITING
