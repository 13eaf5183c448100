"""One contract, three stores: InMemoryRunStore, SqliteRunStore and RedisRunStore
must give the same answers to every query over the same data."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, List, Optional

import pytest
from abstractruntime import InMemoryRunStore, RunState, RunStatus, WaitReason, WaitState
from abstractruntime.storage.sqlite import SqliteDatabase, SqliteRunStore

from tests._redis_util import delete_prefix, redis_url, requires_redis, unique_prefix

pytestmark = requires_redis

T0 = datetime(2030, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def iso(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def make_run(
    run_id: str,
    *,
    status: RunStatus,
    t: int,
    workflow_id: str = "wf.a",
    waiting: Optional[WaitState] = None,
    parent: Optional[str] = None,
    session: Optional[str] = None,
    vars: Optional[dict] = None,
) -> RunState:
    return RunState(
        run_id=run_id,
        workflow_id=workflow_id,
        status=status,
        current_node="n",
        vars=dict(vars or {"i": t}),
        waiting=waiting,
        created_at=iso(t),
        updated_at=iso(t + 0.5),
        session_id=session,
        parent_run_id=parent,
    )


def dataset() -> List[RunState]:
    W = RunStatus.WAITING
    runs = [
        make_run("r01", status=RunStatus.RUNNING, t=1),
        make_run("r02", status=W, t=2, waiting=WaitState(reason=WaitReason.UNTIL, until=iso(60))),
        make_run("r03", status=W, t=3, waiting=WaitState(reason=WaitReason.UNTIL, until=iso(30)), workflow_id="wf.b"),
        make_run("r04", status=W, t=4, waiting=WaitState(reason=WaitReason.EVENT, wait_key="evt:session:s1:go")),
        make_run(
            "r05", status=W, t=5, session="s1",
            waiting=WaitState(reason=WaitReason.EVENT, wait_key="evt:session:s1:go", until=iso(45)),
        ),
        make_run("r06", status=W, t=6, waiting=WaitState(reason=WaitReason.EVENT, wait_key="evt:session:s1:stop")),
        make_run("r07", status=W, t=7, waiting=WaitState(reason=WaitReason.USER, wait_key="user:r07:n")),
        make_run("r08", status=RunStatus.COMPLETED, t=8, workflow_id="wf.b"),
        make_run("r09", status=RunStatus.FAILED, t=9),
        make_run("r10", status=RunStatus.CANCELLED, t=10, workflow_id="wf.b"),
        make_run("r11", status=W, t=11, waiting=WaitState(reason=WaitReason.SUBWORKFLOW, wait_key="subworkflow:c1")),
        make_run("c1", status=W, t=12, parent="r11", waiting=WaitState(reason=WaitReason.UNTIL, until=iso(30))),
        make_run("c2", status=RunStatus.COMPLETED, t=13, parent="r11"),
        make_run("c3", status=RunStatus.RUNNING, t=14, parent="r11", workflow_id="wf.b"),
        make_run("r12", status=RunStatus.RUNNING, t=15, vars={"events_mailbox": ["inbox", "alerts"]}),
        make_run("r13", status=W, t=16, vars={"events_mailbox": "inbox"},
                 waiting=WaitState(reason=WaitReason.EVENT, wait_key="evt:global:*:ping")),
        make_run("r14", status=RunStatus.COMPLETED, t=17, vars={"events_mailbox": "inbox"}),
        make_run("r15", status=W, t=18, waiting=WaitState(reason=WaitReason.UNTIL, until=iso(-5))),
    ]
    return runs


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    kind = request.param
    if kind == "memory":
        yield InMemoryRunStore()
    elif kind == "sqlite":
        yield SqliteRunStore(SqliteDatabase(tmp_path / "runs.db"))
    else:
        from abstractruntime_celery.stores.redis.connection import connect
        from abstractruntime_celery.stores.redis.runs import RedisRunStore

        client = connect(redis_url())
        p = unique_prefix()
        yield RedisRunStore(client, prefix=p)
        delete_prefix(client, p)


@pytest.fixture
def filled(store: Any) -> Any:
    for run in dataset():
        store.save(run)
    save_moved_run(store)
    return store


def save_moved_run(store: Any) -> None:
    """A run that left its wait must leave the indexes too."""
    store.save(make_run("r16", status=RunStatus.WAITING, t=19, waiting=WaitState(reason=WaitReason.UNTIL, until=iso(1))))
    moved = make_run("r16", status=RunStatus.RUNNING, t=20)
    moved.created_at = iso(19)
    store.save(moved)


def ids(runs: List[RunState]) -> List[str]:
    return [r.run_id for r in runs]


# Expected answers are written out by hand: every store must give exactly these.

@pytest.mark.parametrize(
    "kw, expected",
    [
        ({}, ["r16", "r15", "r14", "r13", "r12", "c3", "c2", "c1", "r11", "r10", "r09", "r08", "r07", "r06", "r05", "r04", "r03", "r02", "r01"]),
        ({"limit": 3}, ["r16", "r15", "r14"]),
        ({"status": RunStatus.WAITING}, ["r15", "r13", "c1", "r11", "r07", "r06", "r05", "r04", "r03", "r02"]),
        ({"status": RunStatus.WAITING, "limit": 2}, ["r15", "r13"]),
        ({"status": RunStatus.RUNNING}, ["r16", "r12", "c3", "r01"]),
        ({"status": RunStatus.COMPLETED}, ["r14", "c2", "r08"]),
        ({"workflow_id": "wf.b"}, ["c3", "r10", "r08", "r03"]),
        ({"workflow_id": "wf.b", "status": RunStatus.WAITING}, ["r03"]),
        ({"workflow_id": "nope"}, []),
        ({"wait_reason": WaitReason.EVENT}, ["r13", "r06", "r05", "r04"]),
        ({"status": RunStatus.WAITING, "wait_reason": WaitReason.UNTIL}, ["r15", "c1", "r03", "r02"]),
        ({"status": RunStatus.WAITING, "wait_reason": WaitReason.UNTIL, "workflow_id": "wf.a"}, ["r15", "c1", "r02"]),
        ({"wait_reason": WaitReason.SUBWORKFLOW}, ["r11"]),
        ({"wait_reason": WaitReason.JOB}, []),
    ],
)
def test_list_runs(filled: Any, kw: dict, expected: List[str]) -> None:
    assert ids(filled.list_runs(**kw)) == expected


@pytest.mark.parametrize(
    "now, limit, expected",
    [
        (iso(-60), 100, []),
        (iso(-5), 100, ["r15"]),  # until == now is due
        (iso(29.999), 100, ["r15"]),
        (iso(30), 100, ["r15", "c1", "r03"]),
        (iso(44), 100, ["r15", "c1", "r03"]),
        (iso(45), 100, ["r15", "c1", "r03", "r05"]),  # EVENT with a deadline counts
        (iso(600), 100, ["r15", "c1", "r03", "r05", "r02"]),
        (iso(600), 1, ["r15"]),
        (iso(600), 4, ["r15", "c1", "r03", "r05"]),
    ],
)
def test_list_due_wait_until(filled: Any, now: str, limit: int, expected: List[str]) -> None:
    got = ids(filled.list_due_wait_until(now_iso=now, limit=limit))
    # c1 and r03 share a deadline: their relative order is not part of the contract.
    assert sorted(got) == sorted(expected)
    order = [x for x in got if x not in ("c1", "r03")]
    assert order == [x for x in expected if x not in ("c1", "r03")]


def test_list_children(filled: Any) -> None:
    assert ids(filled.list_children(parent_run_id="r11")) == ["c1", "c2", "c3"]
    assert ids(filled.list_children(parent_run_id="r11", status=RunStatus.COMPLETED)) == ["c2"]
    assert ids(filled.list_children(parent_run_id="r01")) == []


def _needs(store: Any, method: str) -> None:
    """Built-in stores of older abstractruntime releases lack some fast paths (0.12+)."""
    if not hasattr(store, method):
        pytest.skip(f"{type(store).__name__} of this abstractruntime has no {method}")


def test_next_wait_deadline(filled: Any) -> None:
    _needs(filled, "next_wait_deadline")
    assert filled.next_wait_deadline() == iso(-5)


def test_list_mailbox_runs(filled: Any) -> None:
    _needs(filled, "list_mailbox_runs")
    assert ids(filled.list_mailbox_runs(names=["inbox"])) == ["r13", "r12"]
    assert ids(filled.list_mailbox_runs(names=["alerts"])) == ["r12"]
    assert ids(filled.list_mailbox_runs(names=["nobody"])) == []


def _event_waiters(store: Any, keys: List[str]) -> List[str]:
    """The contract definition: the subset of the WAITING(EVENT) scan on these keys."""
    scan = store.list_runs(status=RunStatus.WAITING, wait_reason=WaitReason.EVENT, limit=10_000)
    return [r.run_id for r in scan if r.waiting.wait_key in keys]


@pytest.mark.parametrize(
    "keys", [["evt:session:s1:go"], ["evt:session:s1:stop", "evt:global:*:ping"], ["nothing"]]
)
def test_event_waiters_match_the_scan(filled: Any, keys: List[str]) -> None:
    expected = _event_waiters(filled, keys)
    lookup = getattr(filled, "list_event_waiters", None)
    if lookup is not None:
        assert ids(lookup(wait_keys=keys, limit=10_000)) == expected
    assert expected == {
        ("evt:session:s1:go",): ["r05", "r04"],
        ("evt:session:s1:stop", "evt:global:*:ping"): ["r13", "r06"],
        ("nothing",): [],
    }[tuple(keys)]


def test_event_waiters_by_prefix(filled: Any) -> None:
    lookup = getattr(filled, "list_event_waiters_by_prefix", None)
    if lookup is None:
        pytest.skip(f"{type(filled).__name__} has no prefix lookup")
    assert ids(lookup(prefix="evt:session:s1:")) == ["r06", "r05", "r04"]
    assert ids(lookup(prefix="evt:session:s1:go")) == ["r05", "r04"]
    assert ids(lookup(prefix="evt:x")) == []


def test_load_missing_is_none(store: Any) -> None:
    assert store.load("no-such-run") is None


def test_load_round_trip(filled: Any) -> None:
    want = {r.run_id: r for r in dataset()}["r05"]
    got = filled.load("r05")
    assert got == want


def test_create_if_absent(store: Any) -> None:
    run = make_run("x1", status=RunStatus.RUNNING, t=1)
    assert store.create_if_absent(run) == (run, True)
    again = make_run("x1", status=RunStatus.RUNNING, t=1)
    again.vars["i"] = 999
    existing, created = store.create_if_absent(again)
    assert created is False and existing.vars["i"] == 1
    assert store.load("x1").vars["i"] == 1


def test_run_index_rows_match_sqlite(filled: Any, tmp_path: Any) -> None:
    if isinstance(filled, InMemoryRunStore):
        pytest.skip("InMemoryRunStore renders a missing wait_until as 'None'; SQLite is the reference")
    ref = SqliteRunStore(SqliteDatabase(tmp_path / "ref.db"))
    for run in dataset():
        ref.save(run)
    save_moved_run(ref)
    for kw in ({}, {"status": RunStatus.WAITING}, {"workflow_id": "wf.b", "oldest_first": True}, {"session_id": "s1"}, {"root_only": True, "limit": 5}):
        assert filled.list_run_index(**kw) == ref.list_run_index(**kw), kw
