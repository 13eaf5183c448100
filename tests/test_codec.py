"""One codec for the payload check and the stores: what the check accepts, the Redis
run store writes and reads back equal; what it refuses, it refuses with PayloadError.

Issue: ``check_object`` measured ASCII-escaped JSON while the stores wrote UTF-8, so a
payload holding a lone surrogate was accepted by ``resume_event``/``start`` and every
save of its run then failed in a worker, until the run ended FAILED.
"""

from __future__ import annotations

import uuid
from typing import Any, Iterator

import pytest
import redis
from abstractruntime import RunState, RunStatus
from hypothesis import HealthCheck, event, example, given, settings as hsettings, strategies as st

from abstractruntime_celery import PayloadError, ScheduledRuntime, create_scheduled_runtime
from abstractruntime_celery.payloads import check_object
from abstractruntime_celery.stores.redis.connection import connect
from abstractruntime_celery.stores.redis.runs import RedisRunStore
from tests._redis_util import delete_prefix, redis_url, requires_redis, unique_prefix
from tests.conftest import make_settings
from tests.workflows import registry

pytestmark = requires_redis

LIMIT = 1 << 20


def json_like(text: st.SearchStrategy, key: st.SearchStrategy, number: st.SearchStrategy) -> st.SearchStrategy:
    leaves = st.one_of(st.none(), st.booleans(), number, text)
    return st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(key, inner, max_size=4)),
                        max_leaves=12)


# Any text: st.text() has NUL, newlines, astral characters, never lone surrogates (it filters
# them out even from an alphabet that has them), so those strings are joined from characters.
any_char = st.one_of(st.characters(), st.characters(), st.characters(categories=["Cs"]), st.sampled_from("\x00\n"))
any_text = st.one_of(st.text(max_size=8), st.lists(any_char, max_size=6).map("".join))
# Ints of any size: around 4,300 digits Python stops printing them (the check must say so).
big = st.integers(min_value=4290, max_value=4310).map(lambda n: 10 ** n)
printable_big = st.integers(min_value=4290, max_value=4299).map(lambda n: 10 ** n)  # at most 4,300 digits
any_number = st.one_of(st.integers(), big, big.map(lambda n: -n), st.floats())
any_key = st.one_of(any_text, st.integers(), st.booleans(), st.none(), st.floats())
plain_number = st.one_of(st.integers(), printable_big, st.floats(allow_nan=False, allow_infinity=False))
# Values the check should accept; the same with text that may hold lone surrogates (keys
# too), which only those make it refuse; and values of anything at all (mostly refused).
plain = json_like(st.text(max_size=8), st.text(max_size=6), plain_number)
surrogates = json_like(any_text, st.one_of(st.text(max_size=6), any_text), plain_number)
anything = json_like(any_text, any_key, any_number)
values = st.one_of(st.dictionaries(st.text(max_size=6), plain, max_size=4),
                   st.dictionaries(st.one_of(st.text(max_size=6), any_text), surrogates, max_size=4),
                   st.dictionaries(any_key, anything, max_size=4), anything)


@pytest.fixture(scope="module")
def run_store() -> Iterator[RedisRunStore]:
    """A real RedisRunStore on the local Redis (db 11), under a prefix of its own."""
    client = connect(redis_url(11))
    prefix = unique_prefix()
    yield RedisRunStore(client, prefix=prefix)
    delete_prefix(client, prefix)


@hsettings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=values)
@example(value={"x": "\ud800"})
@example(value={"k\udfff": [1, {"n": "\x00"}]})
def test_what_the_check_accepts_the_redis_run_store_writes_and_reads_back(run_store: RedisRunStore,
                                                                           value: Any) -> None:
    try:
        check_object(value, what="payload", limit=LIMIT)
    except PayloadError as exc:
        assert str(exc).startswith("payload")  # refused, and says what it refused
        event("refused")
        return
    event("accepted")
    # Accepted: a run holding it saves and loads back equal ...
    run = RunState.new(workflow_id="wf", entry_node="start", run_id=f"r{uuid.uuid4().hex}",
                       vars={"value": value})
    run_store.save(run)
    loaded = run_store.load(run.run_id)
    assert loaded is not None and loaded.vars["value"] == value
    run_store.delete(run.run_id)
    # ... and the bytes the check measured are the bytes the store writes for it.
    from abstractruntime.storage.serialize import dumps_compact

    from abstractruntime_celery.codec import dumps_bytes

    assert dumps_bytes(value) == dumps_compact(value).encode("utf-8")


def test_dumps_bytes_and_check_text_refuse_with_payload_errors() -> None:
    from abstractruntime_celery.codec import check_text, dumps_bytes

    assert dumps_bytes({"é": "\U0001f600", "n": None}) == '{"é":"\U0001f600","n":null}'.encode()
    for bad, words in (({"x": "a\ud800b"}, r"lone surrogate U\+D800"), ({"x": float("nan")}, "NaN"),
                       ({"x": b"b"}, "not JSON-serialisable"), ({"x": 10 ** 5000}, "not JSON-serialisable")):
        with pytest.raises(PayloadError, match=words):
            dumps_bytes(bad, what="thing")
    assert check_text("wait-é", what="wait_key", limit=7) == "wait-é"
    for bad, limit, words in (("wait-é", 6, "7 bytes"), ("\udc80", 10, "lone surrogate"), (7, 10, "string")):
        with pytest.raises(PayloadError, match=words):
            check_text(bad, what="wait_key", limit=limit)


# --- at the caller: the direct regression -------------------------------------------------------

@pytest.fixture
def sr(prefix: str) -> Iterator[ScheduledRuntime]:
    """Embedded runtime on the real Redis store and coordination (db 10, this test's prefix)."""
    rt = create_scheduled_runtime(registry=registry, settings=make_settings(prefix), auto_start=False)
    yield rt
    rt.stop()


def keys_of(prefix: str) -> set[str]:
    from tests.conftest import STORE_URL

    return set(redis.Redis.from_url(STORE_URL, decode_responses=True).scan_iter(match=f"{prefix}*"))


@pytest.mark.parametrize("payload", [{"x": "\ud800"}, {"deep": [{"k": "ok\udfff"}]}, {"x\ud83d": 1}])
def test_resume_event_with_a_lone_surrogate_is_refused_at_the_caller_and_nothing_is_stored(
        sr: ScheduledRuntime, prefix: str, payload: dict[str, Any]) -> None:
    run_id, state = sr.run(registry.get("event"), vars={"key": "k"})
    assert state.status == RunStatus.WAITING
    before, keys_before = sr.get_state(run_id), keys_of(prefix)
    with pytest.raises(PayloadError, match=f"{run_id}.*lone surrogate"):
        sr.resume_event(run_id=run_id, wait_key="k", payload=payload)
    assert not sr.driver.coord.inbox.pending(run_id).events
    assert keys_of(prefix) == keys_before
    after = sr.get_state(run_id)
    assert (after.status, after.updated_at, after.vars) == (before.status, before.updated_at, before.vars)
    # The run still takes a good event.
    done = sr.resume_event(run_id=run_id, wait_key="k", payload={"x": "\U0001f600"})
    assert done.status == RunStatus.COMPLETED and done.output == {"event": {"x": "\U0001f600"}}


def test_start_with_a_lone_surrogate_is_refused_and_creates_no_run(sr: ScheduledRuntime, prefix: str) -> None:
    keys_before = keys_of(prefix)
    with pytest.raises(PayloadError, match="'event'.*lone surrogate"):
        sr.start(workflow=registry.get("event"), vars={"key": "k\ud800"})
    assert keys_of(prefix) == keys_before
