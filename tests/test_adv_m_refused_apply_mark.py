"""Adversarial: with the SQLite store (Redis coordination) an event applied by a
tick that then loses its lease is lost for good once a pause and a resume land.

``Ticker._apply_event`` writes the event's *applying* mark (``applying_since`` = the run's
``updated_at`` it read) before ``Runtime.resume``; the fenced save is then refused (the lease
expired: a frozen worker, a long GC pause). ``Ticker._refused`` counts the lost lease and ends
the tick, but leaves the mark. A pause (``Control._leased``) then takes the lease,
``Control._settle_marks`` keeps the mark (its ``applying_since`` still equals ``updated_at``:
nothing committed), and the pause's own save changes ``updated_at``. From then on the mark
reads as "committed before a crash": the resume's ``_settle_marks`` (or the next tick's
``Ticker._resolve_marks``) drops the event. The run waits on ``go`` forever, though the
event was accepted (durable, ``accept_event`` returned its id) and never applied.

README, "Known limits": an applied event is dropped just after its commit, "a crash in between
is resolved by an *applying* mark"; here no commit happened.

At fault: control.py ``Control._settle_marks`` (keeps a mark of a refused apply as it is, then
the control save makes it read as committed) with tick.py ``Ticker._resolve_marks`` (any other
``updated_at`` is taken for the event's commit) and ``Ticker._refused`` (the mark of a refused
apply stays).

(The JSON-file store aliases the runs it loads, so there the refused resume's state is what the
pause loads and saves: the event lands with the pause, by accident; not tested here.)

Deterministic, in-process: the lease key is deleted right after the mark is written (what its
expiry does to a frozen worker); ticks are delivered by calling ``Driver.tick`` by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from tests._dispatchers import Recorder
from tests.conftest import STORE_URL, fx_count, make_settings
from tests.workflows_adv_m import registry

pytestmark = pytest.mark.timeout(60)


def _driver(kind: str, prefix: str, tmp_path: Path) -> Any:
    store = f"sqlite:///{tmp_path}/runs.db" if kind == "sqlite" else f"file://{tmp_path}/runs"
    settings = make_settings(prefix, store_url=store, coord_url=STORE_URL,
                             retry_backoff_s=30.0, retry_jitter=False, tick_max_attempts=3)
    return build(settings, registry, Recorder(), distributed=True)


@pytest.mark.parametrize("kind", ["sqlite"])
def test_an_event_whose_apply_lost_the_lease_survives_a_pause_and_resume(kind: str, prefix: str, fx: str,
                                                                         tmp_path: Path) -> None:
    driver = _driver(kind, prefix, tmp_path)
    run_id = driver.start_run("al-gated", vars={"fx": fx}, dispatch=False)
    driver.tick(run_id, reason="start")
    assert driver.load(run_id).status == RunStatus.WAITING
    event = driver.accept_event(run_id, "go", {"v": 1}, dispatch=False)

    inbox, lease_key = driver.coord.inbox, driver.coord.keys.lease(run_id)
    mark = inbox.mark_applying

    def mark_then_lose_the_lease(ev: Any, updated_at: Optional[str], *fence: Any) -> None:
        mark(ev, updated_at, *fence)
        driver.coord.client.delete(lease_key)  # the lease expires under a frozen worker

    inbox.mark_applying = mark_then_lose_the_lease
    try:
        outcome = driver.tick(run_id, reason="event")
    finally:
        inbox.mark_applying = mark
    assert outcome.skipped == "lease_lost" and inbox.has(run_id, event.event_id)  # refused; still queued

    driver.control.pause(run_id)
    driver.control.resume(run_id)
    for _ in range(3):  # the resume's tick, and a sweep's
        driver.tick(run_id, reason="resumed")
    run = driver.load(run_id)
    assert run.status == RunStatus.COMPLETED and fx_count(fx, run_id, "done") == 1, (
        f"the accepted event {event.event_id} was never applied: the run is {run.status.value} waiting on "
        f"{run.waiting.wait_key if run.waiting else None!r}; still in the inbox: {inbox.has(run_id, event.event_id)}")
