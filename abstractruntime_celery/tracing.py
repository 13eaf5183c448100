"""OpenTelemetry spans: one per tick, one per node, every span of a run in one trace.

Off unless ``tracing`` is set (then ``opentelemetry-api`` must be installed: the
``otel`` extra; it is imported only then). Spans go to the process's global tracer
provider (configure it in each worker process, e.g. in ``worker_process_init``, or
run under ``opentelemetry-instrument``); with none configured they are the API's
no-ops.

A run's trace outlives any process: a run resumed days later must join the trace
its start began. So the first tick of a run (its start, or the first tick a
tracing worker gives a run that has none) stores its span's W3C context with the
run, outside its vars (vars feed creation digests and payload limits): in
``{p}trace:<id>``, written with ``SET NX`` in the tick's write queue, so it rides
the create's round trip. Every later tick reads it in its lease's round trip and
starts its span as a child of it. With tracing off nothing is read or written.
"""

from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from typing import Any, ContextManager, Iterator, Optional

from .context import TickContext
from .errors import ConfigError

TRACER_NAME = "abstractruntime_celery"


class Tracing:
    """Tracing off: every hook does nothing, and nothing is read or written."""

    enabled = False

    def load(self, run_id: str) -> Optional[str]:
        """The run's stored trace context (stores that do not share the lease's Redis)."""
        return None

    @contextmanager
    def tick_span(self, ctx: TickContext, reason: str, stored: Any) -> Iterator[None]:
        yield

    def adopt(self, ctx: TickContext, run: Any) -> None:
        """The tick's run exists: a tick that found no trace context stores its own now."""

    def forget(self, run_id: str) -> None:
        """Retention deleted the run: drop the trace context this process keeps for it
        (embedded mode; with Redis, ``{p}trace:<id>`` goes with the run's other keys)."""


class OtelTracing(Tracing):
    """Spans through the OpenTelemetry API; trace contexts kept with each run."""

    enabled = True

    def __init__(self, coord: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()
        self.tracer = trace.get_tracer(TRACER_NAME)
        self.coord = coord
        self.client = getattr(coord, "client", None)
        #: The embedded mode (no Redis): one process is the cluster; contexts live here.
        self._local: dict[str, str] = {}

    def load(self, run_id: str) -> Optional[str]:
        if self.client is None:
            return self._local.get(run_id)
        value = self.client.get(self.coord.keys.trace(run_id))
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

    @contextmanager
    def tick_span(self, ctx: TickContext, reason: str, stored: Any) -> Iterator[Any]:
        parent = self._extract(stored)
        attributes = {"abstractruntime.run_id": ctx.run_id, "abstractruntime.reason": reason}
        with self.tracer.start_as_current_span("abstractruntime.tick", context=parent,
                                               attributes=attributes) as span:
            ctx.tracing = self  # (the tick's context carries it to the node wrapper and effects)
            ctx.trace_unsaved = None if parent is not None else (self._inject(span), span)
            try:
                yield span
            finally:
                ctx.tracing, ctx.trace_unsaved = None, None

    def adopt(self, ctx: TickContext, run: Any) -> None:
        span = self._trace.get_current_span()
        if span.is_recording():
            span.set_attribute("abstractruntime.workflow_id", str(getattr(run, "workflow_id", "")))
        pending = ctx.trace_unsaved
        if pending is None:
            return
        ctx.trace_unsaved = None
        value, run_id = pending[0], ctx.run_id
        if self.client is None:
            self._local.setdefault(run_id, value)
            return
        key = self.coord.keys.trace(run_id)
        ctx.queue.add(self.client, lambda target: target.set(key, value, nx=True))

    def note_child(self, ctx: TickContext, child_id: str) -> None:
        """A node started ``child_id``: its trace context is the node's span, so the child's
        own ticks join its parent's trace (unless it has one already)."""
        value = self._inject(self._trace.get_current_span())
        if self.client is None:
            self._local.setdefault(child_id, value)
            return
        key = self.coord.keys.trace(child_id)
        ctx.queue.add(self.client, lambda target: target.set(key, value, nx=True))

    def forget(self, run_id: str) -> None:
        self._local.pop(run_id, None)

    def node_span(self, run: Any, node_id: str) -> ContextManager[Any]:
        return self.tracer.start_as_current_span(
            "abstractruntime.node", attributes={"abstractruntime.run_id": str(getattr(run, "run_id", "")),
                                                "abstractruntime.node_id": str(node_id)})

    def _extract(self, stored: Any) -> Any:
        """The stored context as a parent (None: none stored, or unreadable: a new trace)."""
        if isinstance(stored, bytes):
            stored = stored.decode("utf-8", "replace")
        if not stored or not isinstance(stored, str):
            return None
        try:
            carrier = json.loads(stored)
        except ValueError:
            return None
        if not isinstance(carrier, dict):
            return None
        context = self._propagator.extract(carrier={str(k): str(v) for k, v in carrier.items()})
        return context if self._trace.get_current_span(context).get_span_context().is_valid else None

    def _inject(self, span: Any) -> str:
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        return json.dumps(carrier, separators=(",", ":"))


def node_span(ctx: TickContext, run: Any, node_id: str) -> ContextManager[Any]:
    """A span around one node handler, inside the tick's span (nothing when tracing is off)."""
    active = ctx.tracing
    return nullcontext() if active is None else active.node_span(run, node_id)


def child_started(ctx: TickContext, child_id: str) -> None:
    """A node of the tick running here started run ``child_id`` (nothing when tracing is off)."""
    active = ctx.tracing
    if active is not None:
        active.note_child(ctx, child_id)


def open_tracing(settings: Any, coord: Any) -> Tracing:
    """The tracing the settings ask for (``tracing``).

    Raises:
        ConfigError: ``tracing`` is set but ``opentelemetry-api`` is not installed.
    """
    if not getattr(settings, "tracing", False):
        return Tracing()
    try:
        return OtelTracing(coord)
    except ImportError as exc:
        raise ConfigError("tracing=true needs OpenTelemetry: pip install 'abstractruntime-celery[otel]' "
                          f"({exc})") from exc
