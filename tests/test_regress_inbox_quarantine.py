"""One unreadable entry in a run's inbox (written by another version, or corrupted) is
moved aside (quarantined), counted, reported to ``on_run_failed`` and ``stats.errors``,
and the run goes on taking its good events. It used to make every tick of the run
raise, silently, so the run never took another event.

The entry is written by hand into the run's inbox hash ``{prefix}inbox:<run_id>``, as a
Redis client would; a real Celery worker ticks the run.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Iterator

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from tests.conftest import STORE_URL
from tests.workflows_regress_c import build_registry, fx_count

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def failures() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def sr(celery_app: Any, settings: Any, worker: Any, failures: list[tuple[str, str]]) -> Iterator[Any]:
    lock = threading.Lock()

    def on_run_failed(run_id: str, error: Exception) -> None:
        with lock:
            failures.append((run_id, str(error)))

    rt = create_scheduled_runtime(app=celery_app, settings=settings, registry=build_registry(),
                                  on_run_failed=on_run_failed, auto_start=True)
    yield rt
    rt.stop()


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


def _goes_on_past(sr: Any, prefix: str, fx: str, field: str, raw: str,
                  failures: list[tuple[str, str]]) -> str:
    """A run waiting on "go" gets ``raw`` under ``field`` in its inbox, then a good event:
    it must take the good event, and the bad entry must be quarantined and reported."""
    run_id, state = sr.run(sr.registry.get("rc-event"), vars={"fx": fx})
    assert state.status == RunStatus.WAITING
    r = redis.Redis.from_url(STORE_URL)
    r.hset(f"{prefix}inbox:{run_id}", field, raw)

    done = sr.resume_event(run_id=run_id, wait_key="go", payload={"v": 1}, timeout=15)
    assert done.status == RunStatus.COMPLETED, (done.status, done.error)
    assert done.output == {"event": {"v": 1}}
    assert fx_count(fx, run_id, "done") == 1

    assert r.hlen(f"{prefix}inbox:{run_id}") == 0  # moved out: it fails no tick any more
    assert r.hlen(f"{prefix}quarantine:{run_id}") == 1  # kept aside, for a human to look at
    stats = sr.stats
    assert stats.events_quarantined == 1
    assert any(run_id in e and "quarantined" in e for e in stats.errors), stats.errors
    wait_until(lambda: any(rid == run_id for rid, _ in failures), 10, "on_run_failed to hear of it")
    assert [rid for rid, _ in failures] == [run_id]
    return run_id


def test_an_inbox_entry_of_another_versions_format_is_quarantined_and_the_run_takes_its_good_event(
        sr: Any, prefix: str, fx: str, failures: list[tuple[str, str]]) -> None:
    # A header from a version with other fields: it names its event id, but lacks ours.
    header = json.dumps({"event_id": "old-1", "run": "x", "key": "go", "format": 99})
    _goes_on_past(sr, prefix, fx, "old-1", f"1|{header}", failures)




def test_garbage_written_into_a_runs_inbox_is_quarantined_once_and_the_run_takes_its_good_event(
        sr: Any, prefix: str, fx: str, failures: list[tuple[str, str]]) -> None:
    _goes_on_past(sr, prefix, fx, "junk", "this is not an event \x00\x01", failures)




def test_an_inbox_event_whose_payload_is_missing_is_quarantined_and_the_run_takes_its_good_event(
        sr: Any, prefix: str, fx: str, failures: list[tuple[str, str]]) -> None:
    # A header of this version's own format, older than any event to come, whose payload
    # entry is gone (corruption, or a hand-made entry).
    header = json.dumps({"event_id": "no-body", "run_id": "x", "wait_key": "go", "accepted_at": time.time(),
                         "strict": True, "size": 12, "applying_since": None})
    _goes_on_past(sr, prefix, fx, "no-body", f"0|{header}", failures)
