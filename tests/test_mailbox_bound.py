"""Start vars must not amplify into Redis keys: the mailbox names a run declares
(``vars.events_mailbox``) are bounded, at the caller and in the Redis run store.

Issue: a 214 KB ``events_mailbox`` of 25,000 names made 25,009 keys (one index
per name) and every save of that run blocked Redis for 35-52 ms.
"""

from __future__ import annotations

from typing import Iterator

import pytest
import redis
from abstractruntime import RunState, RunStatus

from abstractruntime_celery import PayloadError, ScheduledRuntime, create_scheduled_runtime
from abstractruntime_celery.stores.redis.connection import connect
from abstractruntime_celery.stores.redis.runs import RedisRunStore
from tests.conftest import STORE_URL, make_settings
from tests.workflows import registry


@pytest.fixture
def sr(prefix: str) -> Iterator[ScheduledRuntime]:
    """Embedded runtime (no poll loop) on the real Redis store (db 10, this test's prefix); 1 MB payloads."""
    rt = create_scheduled_runtime(registry=registry, settings=make_settings(prefix, max_payload_bytes=1 << 20),
                                  auto_start=False)
    yield rt
    rt.stop()


def keys_of(prefix: str) -> set[str]:
    return set(redis.Redis.from_url(STORE_URL, decode_responses=True).scan_iter(match=f"{prefix}*"))


def mailboxes(n: int) -> list[str]:
    return [f"mailbox-{i}" for i in range(n)]


def test_starting_a_run_with_1000_mailbox_names_is_refused_and_creates_no_keys(
        sr: ScheduledRuntime, prefix: str) -> None:
    spec = registry.get("event")
    keys_before = keys_of(prefix)
    for attempt in (lambda: sr.start(workflow=spec, vars={"key": "k", "events_mailbox": mailboxes(1000)}),
                    lambda: sr.run(spec, vars={"key": "k", "events_mailbox": mailboxes(1000)})):
        with pytest.raises(PayloadError, match=r"'event'.*1000 mailbox names.*limit of 64") as info:
            attempt()
        assert "MAX_MAILBOX_NAMES" in str(info.value)
    assert keys_of(prefix) == keys_before
    assert sr.driver.run_store.list_runs(limit=10) == []


@pytest.mark.parametrize("names, words", [
    (["x" * 257], "mailbox name 'xxx.*257 bytes.*over the limit of 256"),
    (["ok", "\udc80"], "lone surrogate"),
    (["a\nb\nc"], "newline"),
])
def test_a_mailbox_name_too_long_or_with_a_newline_is_refused(sr: ScheduledRuntime, prefix: str,
                                                              names: list[str], words: str) -> None:
    keys_before = keys_of(prefix)
    with pytest.raises(PayloadError, match=words):
        sr.start(workflow=registry.get("event"), vars={"key": "k", "events_mailbox": names})
    assert keys_of(prefix) == keys_before


def test_starting_a_run_with_64_mailbox_names_works(sr: ScheduledRuntime, prefix: str) -> None:
    names = mailboxes(63) + ["m" * 256]
    run_id, state = sr.run(registry.get("event"), vars={"key": "k", "events_mailbox": names})
    assert state.status == RunStatus.WAITING
    store = sr.driver.run_store
    assert [r.run_id for r in store.list_mailbox_runs(names=["mailbox-7"])] == [run_id]
    assert [r.run_id for r in store.list_mailbox_runs(names=["m" * 256])] == [run_id]
    assert sr.resume_event(run_id=run_id, wait_key="k", payload={}).status == RunStatus.COMPLETED


def test_the_redis_run_store_refuses_to_index_too_many_mailbox_names(prefix: str) -> None:
    """However the run got its vars (a node may set them), the store itself bounds the index keys."""
    store = RedisRunStore(connect(STORE_URL), prefix=prefix)
    run = RunState.new(workflow_id="wf", entry_node="n", run_id="many-mailboxes",
                       vars={"events_mailbox": mailboxes(65)})
    with pytest.raises(PayloadError, match=r"Run 'many-mailboxes'.*65 mailbox names.*limit of 64"):
        store.save(run)
    assert keys_of(prefix) == set()
    run.vars["events_mailbox"] = mailboxes(64)
    store.save(run)
    assert len([k for k in keys_of(prefix) if ":ix-mbox:" in k]) == 64
    # A run that has ended keeps no mailbox index: its vars are stored as they are.
    run.status = RunStatus.COMPLETED
    run.vars["events_mailbox"] = mailboxes(1000)
    store.save(run)
    assert store.load("many-mailboxes").vars["events_mailbox"] == mailboxes(1000)
    assert not [k for k in keys_of(prefix) if ":ix-mbox:" in k]
