"""Adversarial: many concurrent ``respond()`` calls on one waiting run, embedded on the
SQLite store (adv-f's race, which the fix of b6a32f3 closed for Redis only).

README: "``respond`` answers only the wait the run is in when it is called, once: a second
concurrent answer, or one to a run that moved on meanwhile, is refused
(``RunNotWaitingError``), never accepted and then dropped".

On the Redis store ``lua/inbox_put.lua`` refuses an answer when the run's version moved on
since the caller read it (``OneAnswer.version``). The other stores have no version:
``Driver._one_answer`` gives ``OneAnswer(run_key=None, version=None)`` and
``LocalInbox.put`` (coord/local.py) only refuses while another answer is *still queued*.
Embedded, each ``respond`` applies its own event in the caller right after storing it
(``Scheduler._apply_here``): a caller that read the run WAITING before the first answer was
applied, and stores its own after, finds the inbox empty and is accepted. The run has ended
by then; its event is dropped (a line in ``stats.errors``), and that ``respond`` returns the
COMPLETED run as if its answer had been taken. (The memory store has the same gap, but
threads rarely hit it there: ``test_adv_h_respond_moved_on.py`` opens it deterministically.) At fault: driver.py ``Driver._one_answer``
/ ``accept_event`` (no version guard outside Redis), coord/local.py ``LocalInbox.put``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import Settings, create_scheduled_runtime
from tests import workflows_adv_f as wf
from tests.test_adv_f_concurrent_respond import race_respond

pytestmark = pytest.mark.timeout(180)

TRIALS = 30


def _trials(url: str, prefix: str) -> list[tuple[list[int], Any, list[str]]]:
    spec = wf.build_registry().get("af-ask")
    sr = create_scheduled_runtime(workflows=[spec], settings=Settings(store_url=url, key_prefix=prefix))
    out = []
    try:
        for _ in range(TRIALS):
            run_id, state = sr.run(spec)
            assert state.status == RunStatus.WAITING
            results = race_respond(sr, run_id)
            final = sr.get_state(run_id)
            assert final.status == RunStatus.COMPLETED
            told = sorted(i for i, r in results if not isinstance(r, Exception))
            out.append((told, final.output["answer"]["who"], sr.stats.errors[-3:]))
    finally:
        sr.stop()
    return out


def test_embedded_on_sqlite_only_the_respond_whose_answer_is_applied_returns_normally(prefix: str,
                                                                                     tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/runs.db"
    bad = [(told, applied, errors) for told, applied, errors in _trials(url, prefix) if told != [applied]]
    assert not bad, (f"{len(bad)} of {TRIALS} runs: callers told their answer was taken vs the one applied, "
                     f"and stats.errors: {bad[:3]}")
