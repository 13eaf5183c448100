"""``runs list`` paging on a store without sorted indexes (in memory): newest first, every run
once across pages, ties broken by run id, filters applied before paging."""

from __future__ import annotations

import pytest
from abstractruntime import InMemoryRunStore, RunState, RunStatus, WaitReason, WaitState

from abstractruntime_celery.errors import PayloadError
from abstractruntime_celery.runlist import Filters, list_page


def _run(run_id: str, updated: str, **kw: object) -> RunState:
    return RunState(run_id=run_id, workflow_id=str(kw.get("wf", "w")), status=kw.get("status", RunStatus.RUNNING),  # type: ignore[arg-type]
                    current_node="n", updated_at=updated, created_at=updated, parent_run_id=kw.get("parent"),  # type: ignore[arg-type]
                    waiting=kw.get("waiting"))  # type: ignore[arg-type]


def _all_pages(store: InMemoryRunStore, filters: Filters, limit: int) -> list[str]:
    seen, after = [], None
    for _ in range(50):
        page = list_page(store, filters, limit=limit, after=after)
        seen += [r.run_id for r in page.rows]
        if page.next is None:
            return seen
        after = page.next
    raise AssertionError("paging never ended")


def test_pages_walk_every_run_once_newest_first_with_ties() -> None:
    store = InMemoryRunStore()
    same = "2026-01-01T00:00:05+00:00"
    for rid, updated in (("a", "2026-01-01T00:00:01+00:00"), ("b", same), ("c", same), ("d", same),
                         ("e", "2026-01-01T00:00:09+00:00")):
        store.save(_run(rid, updated))
    assert _all_pages(store, Filters(), 1) == ["e", "d", "c", "b", "a"]
    assert _all_pages(store, Filters(), 2) == ["e", "d", "c", "b", "a"]


def test_filters_apply_before_paging() -> None:
    store = InMemoryRunStore()
    wait = WaitState(reason=WaitReason.EVENT, wait_key="k")
    store.save(_run("p", "2026-01-01T00:00:01+00:00"))
    store.save(_run("c1", "2026-01-01T00:00:02+00:00", parent="p", wf="child"))
    store.save(_run("c2", "2026-01-01T00:00:03+00:00", parent="p", wf="child", status=RunStatus.WAITING,
                    waiting=wait))
    assert _all_pages(store, Filters(parent="p"), 1) == ["c2", "c1"]
    assert _all_pages(store, Filters(status="waiting", reason="event"), 5) == ["c2"]
    assert _all_pages(store, Filters(workflow="child", status="running"), 5) == ["c1"]
    with pytest.raises(PayloadError):
        list_page(store, Filters(), limit=1, after="not-a-cursor")
