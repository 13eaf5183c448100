"""Adversarial: with the JSON-file store (Redis coordination) an accepted event is lost when
the process whose apply was refused ticks the run once more and that tick fails, and the
run then moves to another worker process.

``JsonFileRunStore.load`` returns the RunState it cached (keyed on the file's stat token),
and the Runtime changes the run it loaded in place. A tick in process P marks event ``go``
(``applying_since`` = the stored ``updated_at`` U0), ``Runtime.resume`` sets ``updated_at``
to U1 and applies the payload on that cached object, and the fenced save is refused (the
lease expired). The file is untouched, so P's cache now serves the uncommitted resume:
RUNNING at ``fail``, ``updated_at`` U1. P's next tick of the run (its retry, the sweep's
event tick) reads that object; ``Ticker._resolve_marks`` sees ``applying_since`` (U0) !=
``updated_at`` (U1) and drops the event as committed. The node after ``go`` then fails
(a transient error: ``fail_times=1``) and nothing is saved. On disk the run still waits on
``go``, and its event is gone: the retry, delivered to another process Q (a prefork pool
has several), finds a run waiting on ``go`` with an empty inbox; it waits for ever.

Round M's rule ("a mark whose ``applying_since`` differs from the run's ``updated_at`` was
committed") assumes the run read under the lease is the stored one; with this store it is
not, after any refused save in the same process.

At fault: stores/fenced.py ``FencedRunStore.load`` (hands out the inner store's cached,
possibly mutated-but-uncommitted object; a refused save does not evict it) with tick.py
``Ticker._resolve_marks`` (trusts that object's ``updated_at``).

Deterministic, in-process: two drivers on one directory stand for two worker processes; the
lease key is deleted right after the mark is written (what its expiry does to a frozen
worker); ticks are delivered by calling ``Driver.tick`` by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from tests._dispatchers import Recorder
from tests.conftest import STORE_URL, fx_count, make_settings
from tests.workflows_adv_n import registry

pytestmark = pytest.mark.timeout(60)


def _driver(prefix: str, tmp_path: Path) -> Any:
    settings = make_settings(prefix, store_url=f"file://{tmp_path}/runs", coord_url=STORE_URL,
                             retry_backoff_s=0.0, retry_jitter=False, tick_max_attempts=5)
    return build(settings, registry, Recorder(), distributed=True)


def test_a_refused_apply_then_a_failing_tick_in_the_same_process_loses_the_event(prefix: str, fx: str,
                                                                                  tmp_path: Path) -> None:
    p, q = _driver(prefix, tmp_path), _driver(prefix, tmp_path)  # two worker processes
    run_id = p.start_run("am-go-then-fail", vars={"fx": fx, "fail_times": 1}, dispatch=False)
    p.tick(run_id, reason="start")
    assert p.load(run_id).status == RunStatus.WAITING
    event = p.accept_event(run_id, "go", {"v": 1}, dispatch=False)

    inbox, lease_key = p.coord.inbox, p.coord.keys.lease(run_id)
    mark = inbox.mark_applying

    def mark_then_lose_the_lease(ev: Any, updated_at: Optional[str], *fence: Any) -> None:
        mark(ev, updated_at, *fence)
        p.coord.client.delete(lease_key)  # the lease expires under a frozen worker

    inbox.mark_applying = mark_then_lose_the_lease
    try:
        outcome = p.tick(run_id, reason="event")
    finally:
        inbox.mark_applying = mark
    assert outcome.skipped == "lease_lost" and inbox.has(run_id, event.event_id)  # refused; still queued

    with pytest.raises(RuntimeError, match="downstream is down"):
        p.tick(run_id, reason="event")  # P again (the sweep's event tick): "fail" fails once

    for _ in range(3):  # the retry and the sweep's ticks, in process Q
        q.tick(run_id, reason="retry")
    now = q.load(run_id)
    if now.waiting is not None and now.waiting.wait_key == "later":  # past "go": send the second event
        q.accept_event(run_id, "later", {"v": 2}, dispatch=False)
        q.tick(run_id, reason="event")
    run = q.load(run_id)
    assert run.status == RunStatus.COMPLETED, (
        f"the accepted event {event.event_id} was never applied: the run is {run.status.value} waiting on "
        f"{run.waiting.wait_key if run.waiting else None!r}; still in the inbox: {inbox.has(run_id, event.event_id)}; "
        f"tries of 'fail': {fx_count(fx, run_id, 'tries')}")
