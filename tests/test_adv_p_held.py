"""Adversarial (round P), scenarios that held:

* a child FAILED by ``tick_max_attempts`` wakes its parent twice (``fail_run``, then its own
  extra tick's ``_after_terminal``): the parent resumes once, the extra tick does not loop;
* a parent resumed from its child (a save in that tick) whose next node then always fails is
  FAILED after exactly ``tick_max_attempts`` tries (the resume's save does not reset later rows).

Deterministic, in-process: a recording dispatcher, every recorded message delivered by hand.
"""

from __future__ import annotations

from typing import Any

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery.driver import build
from tests._adv_p import Recorder, due
from tests.conftest import fx_count, make_settings
from tests.workflows_adv_p import registry

pytestmark = pytest.mark.timeout(60)


def _deliver_all(driver: Any, rec: Recorder) -> list[tuple[str, str]]:
    delivered = []
    for _ in range(40):
        if not rec.sent:
            break
        run_id, reason, _eta, message_id = rec.sent.pop(0)
        due(driver, run_id)
        delivered.append((run_id, reason))
        try:
            driver.tick(run_id, reason=reason, message_id=message_id)
        except RuntimeError:
            pass
    assert not rec.sent, "messages kept coming (a loop)"
    return delivered


def test_failed_child_wakes_parent_twice_harmlessly(prefix: str, fx: str) -> None:
    settings = make_settings(prefix, retry_backoff_s=30.0, retry_jitter=False, tick_max_attempts=2)
    rec = Recorder()
    driver = build(settings, registry, rec, distributed=True)
    parent = driver.start_run("ap-parent", vars={"fx": fx, "child_vars": {"fx": fx}}, dispatch=False)
    driver.tick(parent, reason="start")
    delivered = _deliver_all(driver, rec)
    assert sum(1 for r, _ in delivered if r == parent) == 2  # woken twice
    state = driver.load(parent)
    assert state.status == RunStatus.COMPLETED and fx_count(fx, parent, "after") == 1
    assert state.output["child"]["output"]["success"] is False


def test_parent_resumed_from_child_then_failing_reaches_failed(prefix: str, fx: str) -> None:
    settings = make_settings(prefix, retry_backoff_s=30.0, retry_jitter=False, tick_max_attempts=3)
    rec = Recorder()
    driver = build(settings, registry, rec, distributed=True)
    parent = driver.start_run("ap-parent", vars={"fx": fx, "after_fails": 99, "child_wf": "ai-flaky-two",
                                                 "child_vars": {"fx": fx, "a_fails": 0, "b_fails": 0}},
                              dispatch=False)
    driver.tick(parent, reason="start")
    _deliver_all(driver, rec)
    state = driver.load(parent)
    assert state.status == RunStatus.FAILED and fx_count(fx, parent, "after") == 3
