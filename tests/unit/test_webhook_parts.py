"""Webhook signatures and routes on their own (no service): the Standard Webhooks check
against the reference library as the other side, and how a path finds its route."""

from __future__ import annotations

import base64
import time
from datetime import datetime, timezone

import pytest

from abstractruntime_celery import ConfigError, Settings
from abstractruntime_celery.webhooks import (
    Route,
    SignatureError,
    StaleTimestampError,
    derived_run_id,
    parse_secrets,
    resume_route,
    sign,
    signed_headers,
    start_route,
    verify,
)

OLD = "whsec_" + base64.b64encode(b"old-secret-0123456789abcdef").decode()
NEW = "whsec_" + base64.b64encode(b"new-secret-fedcba9876543210").decode()


def test_signatures_interoperate_with_the_standardwebhooks_library() -> None:
    from standardwebhooks import Webhook

    body, now = b'{"type": "invoice.paid"}', int(time.time())
    theirs = Webhook(NEW).sign("msg_1", datetime.fromtimestamp(now, tz=timezone.utc), body.decode())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": theirs}
    assert verify(headers, body, parse_secrets(f"{OLD},{NEW}"), tolerance_s=300).delivery_id == "msg_1"
    assert Webhook(OLD).verify(body, signed_headers([OLD], "msg_2", body)) == {"type": "invoice.paid"}
    assert sign(OLD, "msg_1", now, body) != sign(NEW, "msg_1", now, body)


def test_a_signature_is_refused_outside_the_window_and_for_every_malformed_header() -> None:
    body, now = b"{}", int(time.time())
    headers = signed_headers(NEW, "msg_1", body, now)
    keys = parse_secrets(NEW)
    assert verify(headers, body, keys, tolerance_s=300, now=now + 300).timestamp == now
    for later in (now + 301, now - 301):
        with pytest.raises(StaleTimestampError):
            verify(headers, body, keys, tolerance_s=300, now=later)
    sig = headers["webhook-signature"]
    for broken in ({"webhook-signature": "v1,???"}, {"webhook-signature": "v2," + sig[3:]},
                   {"webhook-signature": "v1"}, {"webhook-signature": ""},
                   {"webhook-id": "has space"}, {"webhook-id": "x" * 257}, {"webhook-id": "é"},
                   {"webhook-timestamp": f"{now}.0"}, {"webhook-timestamp": "1e9"},
                   {"webhook-timestamp": f" {now}"}, {"webhook-timestamp": f"-{now}"}):
        with pytest.raises(SignatureError):
            verify({**headers, **broken}, body, keys, tolerance_s=300, now=now)
    with pytest.raises(SignatureError):
        verify(headers, body + b" ", keys, tolerance_s=300, now=now)  # one byte of the body changed
    with pytest.raises(SignatureError):
        verify(headers, body, parse_secrets(OLD), tolerance_s=300, now=now)
    padded = {**headers, "webhook-signature": f"v1,AAAA   {sig}  "}
    assert verify(padded, body, keys, tolerance_s=300, now=now).delivery_id == "msg_1"


def test_secrets_are_parsed_strictly() -> None:
    assert parse_secrets(f" {OLD}, {NEW} ") == (b"old-secret-0123456789abcdef", b"new-secret-fedcba9876543210")
    assert parse_secrets([b"raw-bytes"]) == (b"raw-bytes",)
    for bad in ("whsec_not*base64", "whsec_", "whsec_a b"):
        with pytest.raises(ConfigError):
            parse_secrets([bad])


def test_a_path_finds_its_route_and_its_parameters_are_one_segment_each() -> None:
    route = resume_route()
    assert route.match("/hooks/runs/r1/approval:42") == {"run_id": "r1", "wait_key": "approval:42"}
    assert route.match("/hooks/runs/r1/a/b") is None and route.match("/hooks/runs/r1/") is None
    assert route.match("/hooks/runs.x/r1/k") is None  # literal parts are literal
    for bad in (lambda: Route("bad name", "/x", lambda c: None), lambda: Route("ok", "x", lambda c: None),
                lambda: resume_route("/hooks/{run_id}"), lambda: Route("ok", "/x", "not callable")):
        with pytest.raises(ConfigError):
            bad()
    assert start_route("/hooks/signup", "onboarding").workflow == "onboarding"
    assert route.rule("<{}>") == "/hooks/runs/<run_id>/<wait_key>"  # Flask's syntax
    assert route.rule("<str:{}>") == "/hooks/runs/<str:run_id>/<str:wait_key>"  # Django's


def test_a_start_run_id_is_the_same_for_every_retry_and_never_a_child_id() -> None:
    a, b = derived_run_id("orders", "msg_1"), derived_run_id("orders", "msg_2")
    assert a == derived_run_id("orders", "msg_1") and a != b and a != derived_run_id("other", "msg_1")
    assert a.startswith("wh-") and len(a) == 43


def test_webhook_settings_are_checked_and_the_secrets_never_shown() -> None:
    settings = Settings(webhook_secrets=OLD)
    assert OLD not in repr(settings)
    with pytest.raises(ConfigError):
        Settings(webhook_tolerance_s=300, webhook_dedupe_s=500)
    with pytest.raises(ConfigError):
        Settings(webhook_max_body_bytes=0)


def test_the_asgi_adapter_routes_by_the_full_path_when_mounted() -> None:
    from abstractruntime_celery.webhooks.asgi import _full_path

    assert _full_path({"path": "/hooks/runs/r/k", "root_path": ""}) == "/hooks/runs/r/k"
    assert _full_path({"path": "/hooks/runs/r/k", "root_path": "/hooks"}) == "/hooks/runs/r/k"  # Starlette's Mount
    assert _full_path({"path": "/runs/r/k", "root_path": "/hooks"}) == "/hooks/runs/r/k"  # a mount that strips
