"""Adversarial (retention): the embedded mode with tracing keeps every run's trace context.

With coordination in this process (no Redis: the in-memory, JSON-file and SQLite stores
without ``coord_url``), ``tracing=True`` keeps each run's W3C trace context in a dict of
the process (``OtelTracing._local``) instead of ``{p}trace:<id>``. Retention deletes the
run, its ledger and its in-process notes (failure notes, timer book, inbox), but not that
entry: a long-lived embedded process grows by one entry per run it ever ran.
"""

from __future__ import annotations

from typing import Any

import pytest
from abstractruntime import RunStatus

from tests.test_retention import _driver, _finished, _sweep_until


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_retention_drops_the_in_process_trace_context_of_a_deleted_run(prefix: str, tmp_path: Any,
                                                                        store: str) -> None:
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path}/runs.db"
    driver = _driver(prefix, retention_s=0.001, store_url=url, coord_url="", tracing=True)
    assert driver.coord.client is None  # coordination in this process
    local = driver.ticker.tracing._local
    ids = _finished(driver, 3)
    assert all(driver.load(rid).status == RunStatus.COMPLETED for rid in ids)
    assert set(ids) <= set(local)  # each run's trace context, kept in this process
    _sweep_until(driver, lambda: all(driver.run_store.load(rid) is None for rid in ids))
    assert not set(ids) & set(local), "the trace contexts of deleted runs stay in the process for ever"
