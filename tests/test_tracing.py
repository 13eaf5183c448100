"""OpenTelemetry spans (``tracing=True``): a run started, waiting on an event, and
resumed in a later tick, on a real Celery worker; every span of the run shares the
trace its start began, because the trace context is stored with the run in Redis
(``{p}trace:<id>``), outside its vars, and read back by the later tick."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
import redis
from abstractruntime import RunStatus
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from abstractruntime_celery import create_scheduled_runtime
from abstractruntime_celery.keys import Keys
from devkit.procs import wait_for
from tests.conftest import STORE_URL, make_settings
from tests.workflows import registry

TIMEOUT = 30.0

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def settings(prefix: str) -> Any:
    return make_settings(prefix, tracing=True)


_EXPORTER: list[InMemorySpanExporter] = []


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans this process ends, from now on (the SDK provider is global: set once, and so
    is the exporter on it)."""
    if not _EXPORTER:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
        _EXPORTER.append(InMemorySpanExporter())
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER[0]))
    _EXPORTER[0].clear()
    yield _EXPORTER[0]
    _EXPORTER[0].clear()


def of_run(exporter: InMemorySpanExporter, run_id: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.attributes.get("abstractruntime.run_id") == run_id]


def test_a_resumed_run_joins_the_trace_its_start_began(spans: InMemorySpanExporter, worker: Any,
                                                       celery_app: Any, settings: Any) -> None:
    sr = create_scheduled_runtime(app=celery_app, settings=settings, registry=registry, auto_start=False)
    try:
        run_id, state = sr.run(registry.get("event"), vars={"key": "go"}, timeout=TIMEOUT)
        assert state.status == RunStatus.WAITING
        wait_for(lambda: [s for s in of_run(spans, run_id) if s.name == "abstractruntime.node"], TIMEOUT,
                 "the start's spans")
        (start,) = [s for s in of_run(spans, run_id) if s.name == "abstractruntime.tick"]
        assert start.parent is None and start.attributes["abstractruntime.workflow_id"] == "event"

        # The context is stored with the run, outside its vars.
        stored = redis.Redis.from_url(STORE_URL, decode_responses=True).get(Keys(settings.key_prefix).trace(run_id))
        assert stored is not None and format(start.context.trace_id, "032x") in json.loads(stored)["traceparent"]
        assert not any("trace" in str(k) for k in state.vars)

        done = sr.scheduler.resume_event(run_id=run_id, wait_key="go", payload={"v": 1}, timeout=TIMEOUT)
        assert done.status == RunStatus.COMPLETED
        wait_for(lambda: len([s for s in of_run(spans, run_id) if s.name == "abstractruntime.tick"]) >= 2,
                 TIMEOUT, "the resume's tick span")
    finally:
        sr.stop()

    mine = of_run(spans, run_id)
    ticks = [s for s in mine if s.name == "abstractruntime.tick"]
    resumed = [s for s in ticks if s.attributes["abstractruntime.reason"] != "start"]
    assert resumed, [(s.name, dict(s.attributes)) for s in ticks]
    # Every span of the run is in the start's trace; a later tick hangs under the start's span.
    assert {s.context.trace_id for s in mine} == {start.context.trace_id}
    assert all(s.parent is not None and s.parent.span_id == start.context.span_id for s in resumed)
    nodes = {s.attributes["abstractruntime.node_id"]: s for s in mine if s.name == "abstractruntime.node"}
    assert set(nodes) == {"wait", "done"}
    assert nodes["wait"].parent.span_id == start.context.span_id
    assert nodes["done"].parent.span_id in {s.context.span_id for s in resumed}


def test_a_child_run_joins_its_parents_trace(spans: InMemorySpanExporter, worker: Any, celery_app: Any,
                                             settings: Any) -> None:
    sr = create_scheduled_runtime(app=celery_app, settings=settings, registry=registry, auto_start=False)
    try:
        parent_id, _ = sr.run(registry.get("parent"), vars={"child_delay": 0.3}, wait=False)
        parent = sr.wait_for(parent_id, timeout=TIMEOUT, until=lambda run: run.status == RunStatus.COMPLETED)
        child_id = parent.output["child"]["sub_run_id"]
        wait_for(lambda: len([s for s in of_run(spans, parent_id) if s.name == "abstractruntime.tick"]) >= 2,
                 TIMEOUT, "the parent's resume span")
    finally:
        sr.stop()
    mine, theirs = of_run(spans, parent_id), of_run(spans, child_id)
    (spawn,) = [s for s in mine if s.attributes.get("abstractruntime.node_id") == "spawn"]
    child_ticks = [s for s in theirs if s.name == "abstractruntime.tick"]
    assert len(child_ticks) >= 2, [dict(s.attributes) for s in theirs]  # it waited on its timer, then woke
    assert {s.context.trace_id for s in mine + theirs} == {spawn.context.trace_id}
    # (the Runtime runs the spawn effect after the node's handler: under the parent's tick span)
    assert all(s.parent is not None and s.parent.span_id == spawn.parent.span_id for s in child_ticks)
