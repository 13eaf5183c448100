"""The webhook receiver as a Flask blueprint: ``app.register_blueprint(blueprint(hooks))``.

Each route's path becomes one URL rule of the blueprint (register it without a
``url_prefix``: the routes carry their full paths). The body is read up to the
size limit and no further.
"""

from __future__ import annotations

from typing import Any, Optional

from .http import HookRequest, HookResponse, lower_headers
from .receiver import Webhooks


def blueprint(hooks: Optional[Webhooks] = None, name: str = "abstractruntime_webhooks") -> Any:
    """A blueprint serving ``hooks`` (default: ``Webhooks.from_app()``, built now).

    Raises:
        ConfigError, StoreUnavailableError: as ``Webhooks.from_app``.
    """
    from flask import Blueprint, Response, request

    receiver = hooks if hooks is not None else Webhooks.from_app()
    bp = Blueprint(name, __name__)

    def view(**_: str) -> Any:
        early = receiver.too_large(request.content_length)
        if early is not None:
            return _response(Response, early)
        body = request.stream.read(receiver.max_body_bytes + 1)
        hook = HookRequest(request.method, request.path, lower_headers(request.headers.items()), body)
        return _response(Response, receiver.handle(hook))

    for route in receiver.routes:
        bp.add_url_rule(route.rule("<{}>"), endpoint=route.name, view_func=view,
                        methods=["POST", "GET", "PUT", "PATCH", "DELETE"])
    return bp


def _response(cls: Any, response: HookResponse) -> Any:
    return cls(response.content(), status=response.status, mimetype="application/json", headers=response.headers)
