"""Which Redis clients the stores take, and ``from_url``.

Issue: a ``RedisRunStore`` built on a plain ``redis.Redis.from_url(url)`` client (which
returns bytes) saved and loaded fine, but ``list_runs`` and ``list_due_wait_until``
silently returned [] (run ids came back as bytes, and keys were built from their repr).
Now such a client is refused at construction, naming what to do; the ledger works with
either kind; both stores have ``from_url`` and are exported at the top level.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import redis
from abstractruntime import RunState, RunStatus, WaitReason, WaitState
from abstractruntime.core.models import StepRecord, StepStatus

import abstractruntime_celery
from abstractruntime_celery import ConfigError
from tests._redis_util import delete_prefix, redis_url, requires_redis, unique_prefix

pytestmark = requires_redis


@pytest.fixture
def prefix() -> Iterator[str]:
    p = unique_prefix()
    yield p
    delete_prefix(redis.Redis.from_url(redis_url()), p)


def test_stores_are_exported_at_the_top_level() -> None:
    from abstractruntime_celery.stores.redis.ledger import RedisLedgerStore
    from abstractruntime_celery.stores.redis.runs import RedisRunStore

    assert abstractruntime_celery.RedisRunStore is RedisRunStore
    assert abstractruntime_celery.RedisLedgerStore is RedisLedgerStore
    assert {"RedisRunStore", "RedisLedgerStore"} <= set(abstractruntime_celery.__all__)


def test_a_run_store_on_a_client_that_returns_bytes_is_refused_naming_what_to_do(prefix: str) -> None:
    plain = redis.Redis.from_url(redis_url())
    with pytest.raises(ConfigError, match=r"decode.*RedisRunStore\.from_url\(url\).*decode_responses=True"):
        abstractruntime_celery.RedisRunStore(plain, prefix=prefix)
    assert not list(plain.scan_iter(match=f"{prefix}*"))  # refused before anything was written
    # The same server through a decoding client is fine.
    abstractruntime_celery.RedisRunStore(redis.Redis.from_url(redis_url(), decode_responses=True), prefix=prefix)


def waiting_until(run_id: str, until: str) -> RunState:
    run = RunState.new(workflow_id="wf", entry_node="n", run_id=run_id)
    run.status = RunStatus.WAITING
    run.waiting = WaitState(reason=WaitReason.UNTIL, until=until)
    return run


def test_from_url_builds_a_run_store_whose_queries_find_its_runs(prefix: str) -> None:
    store = abstractruntime_celery.RedisRunStore.from_url(redis_url(), prefix=prefix, max_record_bytes=4096)
    assert store.prefix == prefix
    store.save(waiting_until("due", "2020-01-01T00:00:00+00:00"))
    store.save(RunState.new(workflow_id="wf", entry_node="n", run_id="running"))
    assert {r.run_id for r in store.list_runs()} == {"due", "running"}
    assert [r.run_id for r in store.list_runs(status=RunStatus.WAITING)] == ["due"]
    assert [r.run_id for r in store.list_due_wait_until(now_iso="2021-01-01T00:00:00+00:00")] == ["due"]
    assert store.next_wait_deadline() == "2020-01-01T00:00:00+00:00"
    with pytest.raises(abstractruntime_celery.PayloadError, match="4096"):  # kwargs reach __init__
        store.save(RunState.new(workflow_id="wf", entry_node="n", run_id="big", vars={"x": "y" * 5000}))
    with pytest.raises(ValueError):
        abstractruntime_celery.RedisRunStore.from_url("http://not-redis/0")


def ledger_calls(ledger: Any) -> list[Any]:
    """Every ledger method, on two runs: what each returns."""
    done = StepRecord(run_id="r1", step_id="s1", node_id="n", status=StepStatus.COMPLETED,
                      idempotency_key="k1", result={"text": "é\U0001f600"}, started_at="2020-01-01T00:00:00+00:00")
    ledger.append(done)
    ledger.append(StepRecord(run_id="r1", step_id="s2", node_id="n", status=StepStatus.STARTED,
                             started_at="2020-01-01T00:00:01+00:00"))
    ledger.append(StepRecord(run_id="r2", step_id="s3", node_id="m", status=StepStatus.COMPLETED,
                             started_at="2020-01-01T00:00:02+00:00"))
    return [ledger.list("r1"), ledger.find_completed_result("r1", "k1"), ledger.find_completed_result("r1", "no"),
            ledger.last_record("r1"), ledger.count("r1"), ledger.count_many(["r1", "r2", "r3"]),
            ledger.list_after(run_id="r1", after=1), ledger.delete("r1"), ledger.list("r1"), ledger.count("r2")]


def test_the_ledger_works_the_same_on_a_bytes_client_and_from_url(prefix: str) -> None:
    Ledger = abstractruntime_celery.RedisLedgerStore
    on_bytes = ledger_calls(Ledger(redis.Redis.from_url(redis_url()), prefix=f"{prefix}b:"))
    from_url = ledger_calls(Ledger.from_url(redis_url(), prefix=f"{prefix}s:"))
    assert on_bytes == from_url
    assert from_url[1] == {"text": "é\U0001f600"} and from_url[4] == 2 and from_url[5] == {"r1": 2, "r2": 1}


def test_a_redis_run_store_given_with_no_redis_url_in_the_settings_keeps_its_leases_in_its_redis(
        prefix: str) -> None:
    """A RedisRunStore passed in, with the default (``memory://``) settings: its saves are
    fenced by leases in its own Redis, so the coordination must live there too. (It was
    in-process, and every save of a tick was refused: the run stayed RUNNING.)"""
    from abstractruntime_celery import Settings, create_scheduled_runtime
    from tests.workflows import registry

    store = abstractruntime_celery.RedisRunStore.from_url(redis_url(), prefix=prefix)
    sr = create_scheduled_runtime(run_store=store, registry=registry, settings=Settings(key_prefix=prefix))
    try:
        run_id, state = sr.run(registry.get("event"), vars={})
        assert state.status == RunStatus.WAITING
        assert sr.respond(run_id, {"x": 1}).status == RunStatus.COMPLETED
    finally:
        sr.stop()
