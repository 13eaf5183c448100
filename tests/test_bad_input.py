"""Bad input at every public entry point: refused at the door with one of our
errors, naming the run, workflow or key, and nothing changed.

Most cases run twice: embedded (in-process, in-memory) and distributed (an
in-process Celery worker over the Redis store).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import replace
from typing import Any, Iterator

import pytest
import redis
from abstractruntime import RunStatus
from celery import Celery
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from abstractruntime_celery import (
    AbstractRuntimeCeleryError,
    ConfigError,
    CorruptRunError,
    PayloadError,
    RunNotWaitingError,
    ScheduledRuntime,
    Settings,
    UnknownRunError,
    UnknownWorkflowError,
    WaitKeyMismatchError,
    WorkflowRegistry,
    create_scheduled_runtime,
    install,
)
from abstractruntime_celery.dispatch import TICK_TASK
from tests.conftest import BROKER_URL, STORE_URL
from tests.workflows import WORKFLOWS

MAX_BYTES = 1024


def fresh_registry() -> WorkflowRegistry:
    reg = WorkflowRegistry()
    for spec in WORKFLOWS:
        reg.register(spec)
    return reg


@pytest.fixture(params=["embedded", "distributed"])
def sr(request: Any) -> Iterator[ScheduledRuntime]:
    """A ScheduledRuntime with a small payload limit, in each mode."""
    if request.param == "embedded":
        rt = create_scheduled_runtime(registry=fresh_registry(), settings=Settings(max_payload_bytes=MAX_BYTES))
    else:
        base = request.getfixturevalue("settings")
        app = request.getfixturevalue("celery_app")
        request.getfixturevalue("worker")
        rt = create_scheduled_runtime(app=app, settings=replace(base, max_payload_bytes=MAX_BYTES),
                                      registry=fresh_registry(), auto_start=False)
    yield rt
    rt.stop()


@pytest.fixture
def redis_sr(celery_app: Any, settings: Any, worker: Any) -> Iterator[ScheduledRuntime]:
    rt = create_scheduled_runtime(app=celery_app, settings=settings, registry=fresh_registry(), auto_start=False)
    yield rt
    rt.stop()


def snapshot(sr: ScheduledRuntime, run_id: str) -> tuple[Any, ...]:
    """What must not move when bad input is refused: the run and its inbox."""
    run = sr.get_state(run_id)
    inbox = [e.event_id for e in sr.driver.coord.inbox.pending(run_id).events]
    return run.status, run.current_node, run.updated_at, dict(run.vars), inbox


def waiting_on(sr: ScheduledRuntime, key: str) -> str:
    run_id, state = sr.run(sr.registry.get("event"), vars={"key": key})
    assert state.status == RunStatus.WAITING and state.waiting.wait_key == key
    return run_id


class Odd:
    """Not JSON."""


NOT_JSON = [
    {"b": b"bytes"},
    {"s": {1, 2}},
    {"o": Odd()},
    {"n": float("nan")},
    {"i": float("inf")},
    {"i": -math.inf},
    {"deep": [{"x": b"\x00"}]},
    {1.5: "a float key"},
]
NOT_A_DICT = [None, [1, 2], "text", 7, 1.0, (("a", 1),), b"{}"]


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


# --- unknown and malformed ids -------------------------------------------------------------

def test_unknown_run_id_everywhere(sr: ScheduledRuntime) -> None:
    ghost = uuid.uuid4().hex
    attempts = [
        lambda: sr.get_state(ghost),
        lambda: sr.tick(ghost),
        lambda: sr.resume_event(run_id=ghost, wait_key="k", payload={}),
        lambda: sr.scheduler.resume_event(run_id=ghost, wait_key="k", payload={}, wait=False),
        lambda: sr.respond(ghost, {}),
        lambda: sr.wait_for(ghost, timeout=0.1),
        lambda: sr.resume_subworkflow_parent(child_run_id=ghost, child_output={}),
    ]
    for attempt in attempts:
        with pytest.raises(UnknownRunError) as info:
            attempt()
        assert isinstance(info.value, KeyError)
        assert ghost in str(info.value)
    assert sr.driver.coord.inbox.pending(ghost).events == []


MALFORMED_IDS = ["", " ", "a b", "../etc/passwd", "x" * 129, "run:1", "é", "a\nb"]


def test_malformed_run_id_is_refused(sr: ScheduledRuntime) -> None:
    for bad in MALFORMED_IDS:
        for attempt in (lambda: sr.get_state(bad), lambda: sr.tick(bad),
                        lambda: sr.resume_event(run_id=bad, wait_key="k", payload={}),
                        lambda: sr.respond(bad, {})):
            with pytest.raises(PayloadError) as info:
                attempt()
            assert repr(bad) in str(info.value)


def test_run_id_of_the_wrong_type_is_refused(sr: ScheduledRuntime) -> None:
    for bad in (None, 42, ["r"], b"abc"):
        with pytest.raises(PayloadError) as info:
            sr.resume_event(run_id=bad, wait_key="k", payload={})
        assert repr(bad) in str(info.value)
        with pytest.raises(PayloadError):
            sr.get_state(bad)


def test_unknown_workflow_id_is_refused_and_creates_nothing(sr: ScheduledRuntime) -> None:
    before = len(sr.driver.run_store.list_runs(limit=1000))
    with pytest.raises(UnknownWorkflowError) as info:
        sr.driver.start_run("no_such_workflow")
    assert isinstance(info.value, KeyError)
    assert "no_such_workflow" in str(info.value)
    assert len(sr.driver.run_store.list_runs(limit=1000)) == before


def test_event_for_a_run_whose_workflow_is_gone(sr: ScheduledRuntime) -> None:
    run_id = waiting_on(sr, "k")
    before = snapshot(sr, run_id)
    spec = sr.registry.get("event")
    sr.registry.unregister("event")
    try:
        with pytest.raises(UnknownWorkflowError) as info:
            sr.resume_event(run_id=run_id, wait_key="k", payload={"v": 1})
        assert "event" in str(info.value) and run_id in str(info.value)
        with pytest.raises(UnknownWorkflowError, match=run_id):
            sr.tick(run_id)
        assert snapshot(sr, run_id) == before
    finally:
        sr.registry.register(spec)
    assert sr.respond(run_id, {"v": 2}).output == {"event": {"v": 2}}


# --- wait keys ---------------------------------------------------------------------------

def test_wrong_wait_key_changes_nothing(sr: ScheduledRuntime) -> None:
    run_id = waiting_on(sr, "right")
    before = snapshot(sr, run_id)
    with pytest.raises(WaitKeyMismatchError) as info:
        sr.resume_event(run_id=run_id, wait_key="wrong", payload={"v": 1})
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert run_id in message and "'right'" in message and "'wrong'" in message
    assert snapshot(sr, run_id) == before
    assert sr.stats.events_accepted == 0
    assert sr.resume_event(run_id=run_id, wait_key="right", payload={"v": 2}).output == {"event": {"v": 2}}


def test_wait_key_of_the_wrong_type_is_refused(sr: ScheduledRuntime) -> None:
    run_id = waiting_on(sr, "right")
    before = snapshot(sr, run_id)
    for bad_key in (7, b"right", ["right"], {"k": 1}):
        with pytest.raises(WaitKeyMismatchError) as info:
            sr.resume_event(run_id=run_id, wait_key=bad_key, payload={})
        assert run_id in str(info.value) and repr(bad_key) in str(info.value)
    assert snapshot(sr, run_id) == before


# --- payloads ------------------------------------------------------------------------------

def test_non_json_payload_is_refused(sr: ScheduledRuntime) -> None:
    run_id = waiting_on(sr, "k")
    before = snapshot(sr, run_id)
    for payload in NOT_JSON:
        with pytest.raises(PayloadError) as info:
            sr.resume_event(run_id=run_id, wait_key="k", payload=payload)
        assert run_id in str(info.value)
        with pytest.raises(PayloadError, match=run_id):
            sr.respond(run_id, payload)
    assert snapshot(sr, run_id) == before


def test_payload_that_is_not_a_dict_is_refused(sr: ScheduledRuntime) -> None:
    run_id = waiting_on(sr, "k")
    before = snapshot(sr, run_id)
    for payload in NOT_A_DICT:
        with pytest.raises(PayloadError) as info:
            sr.resume_event(run_id=run_id, wait_key="k", payload=payload)
        assert run_id in str(info.value) and type(payload).__name__ in str(info.value)
    assert snapshot(sr, run_id) == before


def test_oversized_payload_is_refused(sr: ScheduledRuntime) -> None:
    run_id = waiting_on(sr, "k")
    before = snapshot(sr, run_id)
    with pytest.raises(PayloadError) as info:
        sr.resume_event(run_id=run_id, wait_key="k", payload={"blob": "x" * (MAX_BYTES + 1)})
    assert run_id in str(info.value) and str(MAX_BYTES) in str(info.value)
    assert snapshot(sr, run_id) == before
    # Just under the limit is fine.
    done = sr.resume_event(run_id=run_id, wait_key="k", payload={"blob": "x" * (MAX_BYTES - 20)})
    assert done.status == RunStatus.COMPLETED


def test_deeply_nested_payload_is_refused(sr: ScheduledRuntime) -> None:
    run_id = waiting_on(sr, "k")
    before = snapshot(sr, run_id)
    for depth in (150, 990, 5000, 100_000):  # 990: serialises here, but once hit RecursionError in a store
        with pytest.raises(PayloadError) as info:
            sr.resume_event(run_id=run_id, wait_key="k", payload=nested(depth))
        assert run_id in str(info.value) and "nested" in str(info.value)
    looped: dict[str, Any] = {}
    looped["self"] = looped
    with pytest.raises(PayloadError, match=run_id):
        sr.resume_event(run_id=run_id, wait_key="k", payload=looped)
    assert snapshot(sr, run_id) == before


def test_moderately_nested_payload_goes_through(sr: ScheduledRuntime) -> None:
    run_id = waiting_on(sr, "k")
    done = sr.resume_event(run_id=run_id, wait_key="k", payload=nested(50))
    assert done.status == RunStatus.COMPLETED and done.output == {"event": nested(50)}


def test_respond_to_a_completed_run(sr: ScheduledRuntime) -> None:
    run_id = waiting_on(sr, "k")
    sr.respond(run_id, {"v": 1})
    before = snapshot(sr, run_id)
    for attempt in (lambda: sr.respond(run_id, {"v": 2}),
                    lambda: sr.resume_event(run_id=run_id, wait_key="k", payload={"v": 2})):
        with pytest.raises(RunNotWaitingError) as info:
            attempt()
        assert isinstance(info.value, ValueError)
        assert run_id in str(info.value) and "completed" in str(info.value)
    assert snapshot(sr, run_id) == before


BAD_VARS = [{"b": b"x"}, {"n": float("nan")}, {"o": Odd()}, ["not", "a", "dict"], {2: "int key"},
            {"blob": "x" * (MAX_BYTES + 1)}, nested(200)]


def test_start_and_run_with_bad_vars(sr: ScheduledRuntime) -> None:
    before = len(sr.driver.run_store.list_runs(limit=1000))
    spec = sr.registry.get("event")
    for vars_ in BAD_VARS:
        for attempt in (lambda: sr.start(workflow=spec, vars=vars_), lambda: sr.run(spec, vars=vars_)):
            with pytest.raises(PayloadError) as info:
                attempt()
            assert "'event'" in str(info.value)  # names the workflow of the run it refused to create
    assert len(sr.driver.run_store.list_runs(limit=1000)) == before


# --- the Celery app: JSON only ----------------------------------------------------------------

def test_app_accepts_json_only(celery_app: Any) -> None:
    assert list(celery_app.conf.accept_content) == ["json"]
    assert celery_app.conf.task_serializer == "json"


@pytest.mark.parametrize("conf", [{"accept_content": ["json", "pickle"]},
                                  {"accept_content": ["pickle"]},
                                  {"task_serializer": "pickle"}])
def test_install_refuses_an_app_that_accepts_pickle(conf: dict[str, Any], settings: Any) -> None:
    app = Celery(f"pickle-{uuid.uuid4().hex[:6]}", broker=BROKER_URL, set_as_current=False)
    app.conf.update(conf)
    with pytest.raises(ConfigError) as info:
        install(app, settings=settings)
    assert "pickle" in str(info.value) and ("accept_content" in str(info.value))
    with pytest.raises(ConfigError):
        create_scheduled_runtime(app=app, settings=settings, registry=fresh_registry(), auto_start=False)


def test_pickled_message_is_refused_by_the_worker(redis_sr: ScheduledRuntime) -> None:
    run_id = redis_sr.driver.start_run("event", vars={"key": "p"}, dispatch=False)  # RUNNING, unticked
    redis_sr.scheduler.app.send_task(TICK_TASK, args=[run_id], queue=redis_sr.driver.settings.queue,
                                     serializer="pickle")
    time.sleep(1.5)  # ample for the worker to have run it, had it accepted it
    assert redis_sr.get_state(run_id).status == RunStatus.RUNNING
    redis_sr.scheduler.app.send_task(TICK_TASK, args=[run_id], queue=redis_sr.driver.settings.queue)
    state = redis_sr.wait_for(run_id, timeout=10)
    assert state.status == RunStatus.WAITING and state.waiting.wait_key == "p"


# --- garbage in the Redis store ---------------------------------------------------------------

def test_corrupt_record_is_reported_for_that_run_only(redis_sr: ScheduledRuntime) -> None:
    client = redis.Redis.from_url(STORE_URL)
    for garbage in ("{not json", "[1, 2, 3]", '{"run_id": 5}', b"\xff\xfe"):
        bad = waiting_on(redis_sr, "k")
        good = waiting_on(redis_sr, "k")
        client.hset(redis_sr.driver.run_store.run_key(bad), "doc", garbage)

        for attempt in (lambda: redis_sr.get_state(bad),
                        lambda: redis_sr.resume_event(run_id=bad, wait_key="k", payload={"v": 1}),
                        lambda: redis_sr.respond(bad, {"v": 1}),
                        lambda: redis_sr.tick(bad)):
            with pytest.raises(CorruptRunError) as info:
                attempt()
            assert bad in str(info.value)
        assert redis_sr.driver.coord.inbox.pending(bad).events == []

        redis_sr.scheduler.poll_once()  # a sweep over a store holding garbage does not crash
        listed = [r.run_id for r in redis_sr.find_waiting_runs(limit=1000)]
        assert good in listed and bad not in listed  # listings skip the bad record, keep the rest
        assert redis_sr.respond(good, {"v": 2}).output == {"event": {"v": 2}}


def test_non_hash_value_under_a_run_key(redis_sr: ScheduledRuntime) -> None:
    bad = waiting_on(redis_sr, "k")
    good = waiting_on(redis_sr, "k")
    client = redis.Redis.from_url(STORE_URL)
    key = redis_sr.driver.run_store.run_key(bad)
    client.delete(key)
    client.set(key, "just a string")
    with pytest.raises(CorruptRunError, match=bad):
        redis_sr.get_state(bad)
    with pytest.raises(CorruptRunError, match=bad):
        redis_sr.resume_event(run_id=bad, wait_key="k", payload={})
    assert redis_sr.respond(good, {"v": 3}).output == {"event": {"v": 3}}


# --- property: resume_event never crashes, never touches another run --------------------------

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
json_like = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                         max_leaves=20)
odd_values = st.one_of(st.binary(max_size=8), st.sets(st.integers(), max_size=3), st.just(float("nan")),
                       st.just(float("inf")), st.builds(Odd))
payloads = st.one_of(st.dictionaries(st.text(max_size=8), st.one_of(json_like, odd_values), max_size=5),
                     json_like, odd_values)
wait_keys = st.one_of(st.just("k"), st.just("bystander"), st.text(max_size=30), st.none(), st.integers(),
                      st.binary(max_size=5))


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_resume_event_only_raises_our_errors_and_never_touches_another_run(data: st.DataObject) -> None:
    sr = create_scheduled_runtime(registry=fresh_registry(), auto_start=False,
                                  settings=Settings(max_payload_bytes=MAX_BYTES))
    try:
        bystander = waiting_on(sr, "bystander")
        target = waiting_on(sr, "k")
        before = snapshot(sr, bystander)
        for _ in range(3):
            run_id = data.draw(st.one_of(st.just(target), st.just(bystander + "x"), st.text(max_size=40),
                                         st.integers()), label="run_id")
            wait_key = data.draw(wait_keys, label="wait_key")
            payload = data.draw(payloads, label="payload")
            try:
                sr.scheduler.resume_event(run_id=run_id, wait_key=wait_key, payload=payload, wait=False)
            except AbstractRuntimeCeleryError as exc:
                assert str(exc)  # documented, and says something
            assert snapshot(sr, bystander) == before
    finally:
        sr.stop()


def test_cancel_of_an_unknown_run_names_it() -> None:
    from abstractruntime_celery import UnknownRunError, create_scheduled_runtime

    sr = create_scheduled_runtime()
    try:
        with pytest.raises(UnknownRunError, match="no-such-run"):
            sr.cancel_run("no-such-run")
    finally:
        sr.stop()
