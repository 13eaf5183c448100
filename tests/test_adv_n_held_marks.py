"""Adversarial, held: the *applying* mark on the SQLite and JSON-file stores (Redis
coordination) when the commit did happen.

* a tick whose resume committed but which crashed before ``inbox.done`` (here: ``done``
  raises once): the next tick drops the event as committed (``applying_since`` != the
  run's ``updated_at``) and does not apply it again; the run goes on;
* a resume that committed, followed in the same tick by a node that fails: the event was
  dropped with the commit, the retry runs the node again and never re-applies the event.

Deterministic, in-process: a recording dispatcher; ``Driver.tick`` delivers by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from tests._dispatchers import Recorder
from tests.conftest import STORE_URL, fx_count, make_settings
from tests.workflows_adv_n import registry

pytestmark = pytest.mark.timeout(60)


def _driver(kind: str, prefix: str, tmp_path: Path) -> Any:
    store = f"sqlite:///{tmp_path}/runs.db" if kind == "sqlite" else f"file://{tmp_path}/runs"
    settings = make_settings(prefix, store_url=store, coord_url=STORE_URL,
                             retry_backoff_s=0.0, retry_jitter=False, tick_max_attempts=5)
    return build(settings, registry, Recorder(), distributed=True)


def _finish(driver: Any, run_id: str) -> Any:
    run = driver.load(run_id)
    assert run.waiting is not None and run.waiting.wait_key == "later", run
    driver.accept_event(run_id, "later", {"v": 2}, dispatch=False)
    driver.tick(run_id, reason="event")
    return driver.load(run_id)


@pytest.mark.parametrize("kind", ["sqlite", "file"])
def test_a_crash_between_the_commit_and_the_drop_applies_the_event_once(kind: str, prefix: str, fx: str,
                                                                       tmp_path: Path) -> None:
    driver = _driver(kind, prefix, tmp_path)
    run_id = driver.start_run("am-go-then-fail", vars={"fx": fx, "fail_times": 0}, dispatch=False)
    driver.tick(run_id, reason="start")
    event = driver.accept_event(run_id, "go", {"v": 1}, dispatch=False)
    inbox = driver.coord.inbox
    done = inbox.done

    def crash(run: str, ids: Any) -> None:
        inbox.done = done
        raise ConnectionError("the worker dies after the commit")

    inbox.done = crash
    with pytest.raises(ConnectionError):
        driver.tick(run_id, reason="event")
    assert inbox.has(run_id, event.event_id)  # committed, not dropped
    driver.tick(run_id, reason="retry")
    assert not inbox.has(run_id, event.event_id)
    run = _finish(driver, run_id)
    assert run.status == RunStatus.COMPLETED and fx_count(fx, run_id, "tries") == 1
    assert run.output == {"ev": {"v": 2}}


@pytest.mark.parametrize("kind", ["sqlite", "file"])
def test_a_node_failing_after_the_resume_does_not_apply_the_event_again(kind: str, prefix: str, fx: str,
                                                                       tmp_path: Path) -> None:
    driver = _driver(kind, prefix, tmp_path)
    run_id = driver.start_run("am-go-then-fail", vars={"fx": fx, "fail_times": 2}, dispatch=False)
    driver.tick(run_id, reason="start")
    event = driver.accept_event(run_id, "go", {"v": 1}, dispatch=False)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="downstream is down"):
            driver.tick(run_id, reason="retry")
        assert not driver.coord.inbox.has(run_id, event.event_id)
    driver.tick(run_id, reason="retry")
    run = _finish(driver, run_id)
    assert run.status == RunStatus.COMPLETED and fx_count(fx, run_id, "tries") == 3
    assert run.vars.get("go") == {"v": 1}
