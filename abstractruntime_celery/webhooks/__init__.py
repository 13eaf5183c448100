"""Webhook ingestion: a signed HTTP request becomes an event for a waiting run
(``resume_event``) or a new run, stored once however often the sender repeats it.

One framework-free core (``receiver.Webhooks.handle``: method, path, headers and body
in; status and JSON body out) and thin adapters: ``webhooks.asgi`` (Starlette,
FastAPI, ``abstractruntime-celery webhooks serve``), ``webhooks.flask`` (a blueprint)
and ``webhooks.django`` (a view and a URLconf to include). Signatures follow
Standard Webhooks (``signature.py``); routes map a request to a target (``routes.py``).
"""

from .http import HookRequest, HookResponse
from .receiver import Webhooks, load_routes
from .routes import HookCall, Resume, Route, Start, derived_run_id, resume_route, start_route
from .signature import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    StaleTimestampError,
    parse_secrets,
    sign,
    signed_headers,
    verify,
)

__all__ = [
    "Webhooks", "HookRequest", "HookResponse", "load_routes",
    "Route", "Resume", "Start", "HookCall", "resume_route", "start_route", "derived_run_id",
    "ID_HEADER", "TIMESTAMP_HEADER", "SIGNATURE_HEADER", "SignatureError", "StaleTimestampError",
    "parse_secrets", "sign", "signed_headers", "verify",
]
