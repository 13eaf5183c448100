"""Webhook routes the test servers load (``ABSTRACTRUNTIME_CELERY_WEBHOOK_ROUTES``).

* ``runs``: the run and wait key in the path (the default route);
* ``orders``: starts an ``event`` run per delivery (its id derived from the webhook id);
* ``payments``: a provider's object id in the body, looked up in the user's own table
  (a Redis hash under the test's key prefix, in the side-effect database);
* ``legacy``: a provider with its own scheme (``x-legacy-signature: sha256=<hex>`` over the
  body, delivery id in ``x-legacy-delivery``): the route's custom verifier.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

import redis

from abstractruntime_celery.webhooks import HookCall, Resume, Route, SignatureError, resume_route, start_route

LEGACY_SECRET = b"legacy-shared-secret"
FX_URL = os.environ.get("ARC_TEST_FX_URL") or f"{os.environ['ARC_TEST_REDIS']}/14"  # (set by tests/conftest.py)


def table_key(prefix: str | None = None) -> str:
    """The user's own table: provider object id -> "<run id> <wait key>"."""
    return (prefix or os.environ.get("ABSTRACTRUNTIME_CELERY_KEY_PREFIX", "arc:")) + "payments-table"


def payment(call: HookCall) -> Resume:
    object_id = call.body.get("data", {}).get("object_id")
    if not isinstance(object_id, str):
        raise ValueError("data.object_id is missing")
    found = redis.Redis.from_url(FX_URL, decode_responses=True).hget(table_key(), object_id)
    if found is None:
        raise LookupError(f"no run waits for payment {object_id!r}")
    run_id, wait_key = found.split(" ", 1)
    return Resume(run_id, wait_key, {"paid": call.body["data"].get("amount")})


def legacy_verifier(request: Any) -> str:
    given = request.headers.get("x-legacy-signature", "")
    want = "sha256=" + hmac.new(LEGACY_SECRET, request.body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given.encode(), want.encode()):
        raise SignatureError("x-legacy-signature does not match")
    return request.headers.get("x-legacy-delivery", "")


def order_vars(call: HookCall) -> dict[str, Any]:
    return {"key": "shipped", "order": call.body.get("order"), "fx": call.body.get("fx")}


routes = [
    resume_route(),
    start_route("/hooks/orders", "event", name="orders", vars=order_vars),
    Route("payments", "/hooks/payments", payment),
    resume_route("/hooks/legacy/{run_id}/{wait_key}", name="legacy", verifier=legacy_verifier),
]
