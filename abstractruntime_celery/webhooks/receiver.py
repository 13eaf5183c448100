"""The framework-free webhook receiver: a request in, a status and a JSON body out.

Order of the checks, cheapest and least revealing first: the method, the route, the
body's size, the signature and its replay window, the body's JSON, the route's target.
Only then is anything written, in one atomic step: the event and its delivery mark
(``lua/inbox_put.lua``), or the run (its id derived from the delivery id). A 2xx
answer means the event (or run) is durable; a 4xx that nothing was stored; a 5xx may
also follow a write whose reply was lost. A delivery the sender repeats is answered as
the first one was, and stored once.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, Callable, Optional, Sequence

from redis.exceptions import RedisError

from ..codec import dumps_bytes
from ..config import MAX_SECONDS
from ..errors import (
    AbstractRuntimeCeleryError,
    ConfigError,
    DuplicateDeliveryError,
    InboxFullError,
    PayloadError,
    RunBusyError,
    RunNotWaitingError,
    RunPausedError,
    StoreError,
    UnknownRunError,
    UnknownWorkflowError,
    WaitKeyMismatchError,
)
from ..inbox import Delivery
from ..runstate import TERMINAL
from .http import HookRequest, HookResponse
from .routes import HookCall, Resume, Route, Start, Target, derived_run_id, resume_route
from .signature import DELIVERY_ID, SignatureError, parse_secrets, verify

log = logging.getLogger(__name__)

_ENDED = frozenset(s.value for s in TERMINAL)


class Refused(Exception):
    """Internal: the request is answered with an error (nothing was stored)."""

    def __init__(self, status: int, code: str, message: str, headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(message)
        self.response = HookResponse(status, {"error": code, "message": message}, headers or {})


class Webhooks:
    """Turns signed webhook requests into events (``resume_event``) and starts, safely."""

    def __init__(self, driver: Any, *, secrets: Any = None, routes: Optional[Sequence[Route]] = None,
                 max_body_bytes: Optional[int] = None, tolerance_s: Optional[float] = None,
                 dedupe_s: Optional[float] = None, clock: Callable[[], float] = time.time) -> None:
        """``driver``: a ``Driver``, or what has one (``Scheduler``, ``ScheduledRuntime``).
        Unset options come from the driver's settings (``webhook_*``).

        Raises:
            ConfigError: no secret for a route that needs one, a malformed secret, two routes
                with one name, a start route naming a workflow the registry lacks, or a bad limit.
        """
        self.driver = getattr(driver, "driver", driver)
        settings = self.driver.settings
        self.secrets = parse_secrets(settings.webhook_secrets if secrets is None else secrets)
        self.routes: tuple[Route, ...] = tuple(routes) if routes is not None else (resume_route(),)
        for route in self.routes:
            if not isinstance(route, Route):
                raise ConfigError(f"webhooks: a route must be a Route, got {type(route).__name__}")
        self.max_body_bytes = int(settings.webhook_max_body_bytes if max_body_bytes is None else max_body_bytes)
        self.tolerance_s = float(settings.webhook_tolerance_s if tolerance_s is None else tolerance_s)
        self.dedupe_s = float(settings.webhook_dedupe_s if dedupe_s is None else dedupe_s)
        self.clock = clock
        self._route_secrets = {r.name: parse_secrets(r.secrets) if r.secrets is not None else self.secrets
                               for r in self.routes}
        self._check()

    def _check(self) -> None:
        """Raises ConfigError for a setup that could not serve a request (see ``__init__``)."""
        if self.max_body_bytes <= 0 or self.tolerance_s <= 0 or not 2 * self.tolerance_s <= self.dedupe_s <= MAX_SECONDS:
            raise ConfigError("webhooks: max_body_bytes and tolerance_s must be > 0 and dedupe_s at least "
                              f"twice tolerance_s (and at most {MAX_SECONDS:g})")
        names = [r.name for r in self.routes]
        if len(set(names)) != len(names) or not names:
            raise ConfigError(f"webhooks: routes must be at least one, with distinct names, got {names}")
        for route in self.routes:
            if route.verifier is None and not self._route_secrets[route.name]:
                raise ConfigError(f"webhooks: route {route.name!r} has no secret: set webhook_secrets "
                                  "(whsec_<base64>), the route's secrets, or its verifier")
            if route.workflow is not None and self.driver.registry.get(route.workflow) is None:
                raise ConfigError(f"webhooks: route {route.name!r} starts workflow {route.workflow!r}, "
                                  "which this process's registry lacks")

    @classmethod
    def from_app(cls, app: Any = None, **options: Any) -> "Webhooks":
        """A receiver on the driver of ``app`` (default: ``abstractruntime_celery.app``),
        with its settings; routes from ``webhook_routes`` unless given.

        Raises:
            ConfigError: as ``__init__``, or the settings, registry or routes cannot be loaded.
            StoreUnavailableError: the store's Redis cannot be reached.
        """
        from ..tasks import driver_for, settings_for

        if app is None:
            from ..app import app as default_app

            app = default_app
        settings = settings_for(app)
        if options.get("secrets") is None:  # a malformed secret fails before the stores are opened
            options["secrets"] = parse_secrets(settings.webhook_secrets)
        if options.get("routes") is None and settings.webhook_routes:
            options["routes"] = load_routes(settings.webhook_routes)
        return cls(driver_for(app), **options)

    # --- the request -------------------------------------------------------------------

    def too_large(self, content_length: Optional[int]) -> Optional[HookResponse]:
        """The 413 answer for a declared body over the limit (adapters ask before reading)."""
        if content_length is not None and content_length > self.max_body_bytes:
            return Refused(413, "body_too_large", f"body over {self.max_body_bytes} bytes").response
        return None

    def handle(self, request: HookRequest) -> HookResponse:
        """Answer one request. Never raises: an unexpected error is logged and answered 500
        (nothing is half-stored: every write is one atomic step)."""
        try:
            return self._handle(request)
        except Refused as refused:  # said once, without the body: a wrong secret shows up here
            log.info("webhook %s %s refused: %s %s", request.method, request.path[:200], refused.response.status,
                     refused.response.body.get("error"))
            return refused.response
        except (ConnectionError, TimeoutError, RedisError) as exc:  # the write did not happen, or did whole
            log.warning("webhook %s: store unavailable: %s: %s", request.path[:200], type(exc).__name__, exc)
            return HookResponse(503, {"error": "unavailable", "message": "store unavailable; retry"},
                                {"Retry-After": "5"})
        except Exception:
            log.exception("webhook %s %s failed", request.method, request.path[:200])
            return HookResponse(500, {"error": "internal_error", "message": "internal error; nothing was stored"})

    def _handle(self, request: HookRequest) -> HookResponse:
        if request.method.upper() != "POST":
            raise Refused(405, "method_not_allowed", "webhooks are POSTed", {"Allow": "POST"})
        route, params = self.match(request.path)
        if len(request.body) > self.max_body_bytes:
            raise Refused(413, "body_too_large", f"body over {self.max_body_bytes} bytes")
        delivery_id = self._verify(route, request)
        body = _json_object(request.body)
        target = self._target(route, HookCall(route.name, params, body, delivery_id, request))
        if isinstance(target, Start):
            return self._start(route, delivery_id, target)
        return self._resume(route, delivery_id, target)

    def match(self, path: str) -> tuple[Route, dict[str, str]]:
        """The route of ``path`` and its parameters.

        Raises:
            Refused: no route has this path (404).
        """
        for route in self.routes:
            params = route.match(path)
            if params is not None:
                return route, params
        raise Refused(404, "no_route", "no webhook route has this path")

    def _verify(self, route: Route, request: HookRequest) -> str:
        """The delivery id of a request whose signature holds. Raises Refused (401)."""
        try:
            if route.verifier is not None:
                delivery_id = route.verifier(request)
                if not isinstance(delivery_id, str) or not DELIVERY_ID.fullmatch(delivery_id):
                    raise SignatureError(f"route {route.name!r}: its verifier gave no usable delivery id")
                return delivery_id
            return verify(request.headers, request.body, self._route_secrets[route.name],
                          tolerance_s=self.tolerance_s, now=self.clock()).delivery_id
        except SignatureError as exc:
            raise Refused(401, exc.code, str(exc)) from None

    def _target(self, route: Route, call: HookCall) -> Target:
        """Raises Refused: 404 (no target), 422 (a target the route could not make)."""
        try:
            target = route.resolve(call)
        except LookupError as exc:
            raise Refused(404, "unknown_target", _said(exc)) from None
        except ValueError as exc:
            raise Refused(422, "bad_target", _said(exc)) from None
        if target is None:
            raise Refused(404, "unknown_target", f"route {route.name!r} found no target for this delivery")
        if not isinstance(target, (Resume, Start)):
            raise TypeError(f"route {route.name!r} returned {type(target).__name__}, not Resume or Start")
        return target

    # --- writing -------------------------------------------------------------------------

    def _resume(self, route: Route, delivery_id: str, target: Resume) -> HookResponse:
        driver = self.driver
        key = driver.coord.keys.hook_seen(route.name, delivery_id)
        event_id = uuid.uuid4().hex
        record = json.dumps({"run_id": target.run_id, "wait_key": target.wait_key, "event_id": event_id,
                             "at": self.clock()}, separators=(",", ":"))
        self._check_size(target.payload)
        try:
            driver.accept_event(target.run_id, target.wait_key, target.payload, dispatch=False, event_id=event_id,
                                delivery=Delivery(key, record, self.dedupe_s))
        except DuplicateDeliveryError as dup:
            return _duplicate(dup.record)
        except AbstractRuntimeCeleryError as exc:
            seen = driver.coord.inbox.delivered(key)  # a twin stored it, then the run moved on
            if seen is not None:
                return _duplicate(seen)
            raise _refusal(exc) from None
        self._send(target.run_id, "event")
        return HookResponse(202, {"status": "accepted", "duplicate": False, "run_id": target.run_id,
                                  "event_id": event_id})

    def _start(self, route: Route, delivery_id: str, target: Start) -> HookResponse:
        driver = self.driver
        run_id = target.run_id or derived_run_id(route.name, delivery_id)
        self._check_size(target.vars)
        made: list[bool] = []
        try:
            driver.start_run(target.workflow, vars=target.vars, run_id=run_id, dispatch=False,
                             on_created=lambda: made.append(True))
        except UnknownWorkflowError as exc:
            raise Refused(422, "unknown_workflow", str(exc)) from None
        except AbstractRuntimeCeleryError as exc:
            raise _refusal(exc) from None
        except ValueError as exc:  # RunIdentityConflict: the id is another run's
            raise Refused(409, "run_conflict", _said(exc)) from None
        self._send(run_id, "start")  # a repeat sends one too: the first send may have failed
        if not made:
            return HookResponse(200, {"status": "duplicate", "duplicate": True, "run_id": run_id})
        return HookResponse(201, {"status": "started", "duplicate": False, "run_id": run_id})

    def _check_size(self, payload: Any) -> None:
        """A payload over ``max_payload_bytes`` as the stores write it: 413."""
        limit = self.driver.settings.max_payload_bytes
        try:
            size = len(dumps_bytes(payload, what="webhook payload"))
        except PayloadError as exc:
            raise Refused(422, "invalid_payload", str(exc)) from None
        if size > limit:
            raise Refused(413, "payload_too_large", f"payload is {size} bytes of JSON, over {limit} (max_payload_bytes)")

    def _send(self, run_id: str, reason: str) -> None:
        """Send the run its tick. The event or run is durable already: if the broker fails,
        the sweep sends the tick later (``event_redeliver_s``, ``orphan_grace_s``)."""
        try:
            self.driver.send(run_id, reason)
        except Exception as exc:
            log.warning("webhook: tick for run %s not sent (%s: %s); the sweep will send it", run_id,
                        type(exc).__name__, exc)


def _json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object. Raises Refused: 400 (not JSON), 422 (JSON, not an object)."""
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Refused(400, "not_json", f"body is not UTF-8 JSON: {_said(exc)}") from None
    if not isinstance(value, dict):
        raise Refused(422, "not_an_object", f"body must be a JSON object, got {type(value).__name__}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _duplicate(record: str) -> HookResponse:
    """The answer to a repeated delivery: what the first one stored."""
    try:
        first = json.loads(record)
    except ValueError:
        first = {}
    body = {"status": "duplicate", "duplicate": True}
    body.update({k: first[k] for k in ("run_id", "event_id") if isinstance(first, dict) and k in first})
    return HookResponse(200, body)


def _refusal(exc: Exception) -> Refused:
    """The HTTP answer to an error of the driver (nothing was stored)."""
    if isinstance(exc, UnknownRunError):
        return Refused(404, "unknown_run", str(exc))
    if isinstance(exc, RunPausedError):
        return Refused(409, "run_paused", str(exc))
    if isinstance(exc, RunNotWaitingError):
        return Refused(409, "run_ended" if exc.status in _ENDED else "not_waiting", str(exc))
    if isinstance(exc, WaitKeyMismatchError):
        return Refused(422, "wait_key_mismatch", str(exc))
    if isinstance(exc, InboxFullError):
        return Refused(429, "inbox_full", str(exc), {"Retry-After": "5"})
    if isinstance(exc, PayloadError):
        return Refused(422, "invalid_request", str(exc))
    if isinstance(exc, UnknownWorkflowError):
        return Refused(503, "unknown_workflow", str(exc), {"Retry-After": "30"})
    if isinstance(exc, (RunBusyError, StoreError)):
        return Refused(503, "unavailable", str(exc), {"Retry-After": "5"})
    return Refused(500, "internal_error", type(exc).__name__)


def _said(exc: BaseException) -> str:
    return str(exc)[:300]


def load_routes(path: str) -> list[Route]:
    """The routes ``pkg.mod:attr`` names: a list of Routes, or a callable returning one.

    Raises:
        ConfigError: the path cannot be imported, or does not give Routes.
    """
    from ..registry import load_object

    obj = load_object(path, "routes")
    routes = obj() if callable(obj) else obj
    if isinstance(routes, Route):
        routes = [routes]
    if not isinstance(routes, (list, tuple)) or not all(isinstance(r, Route) for r in routes):
        raise ConfigError(f"webhook_routes {path!r} must name a list of Route (or a callable returning one)")
    return list(routes)
