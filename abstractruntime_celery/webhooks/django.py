"""The webhook receiver in Django: ``path("", include("abstractruntime_celery.webhooks.django"))``.

Include it at the root (the routes carry their full paths). Its ``urlpatterns``
are built on first use (Django's startup checks, or the first request) from the
settings (``ABSTRACTRUNTIME_CELERY_*``); for a receiver you built yourself, use
``include(urls(hooks))`` or ``webhook_view(hooks)``. The view is exempt from CSRF
(the signature authenticates the sender) and reads the body up to the size limit.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from .http import HookRequest, HookResponse, lower_headers
from .receiver import Webhooks


def webhook_view(hooks: Webhooks) -> Callable[..., Any]:
    """A Django view that answers every request with ``hooks``."""
    from django.http import HttpResponse
    from django.views.decorators.csrf import csrf_exempt

    def view(request: Any, **_: str) -> Any:
        early = hooks.too_large(_int(request.META.get("CONTENT_LENGTH")))
        if early is None:
            body = request.read(hooks.max_body_bytes + 1)
            headers = lower_headers((k.replace("_", "-"), v) for k, v in request.headers.items())
            early = hooks.handle(HookRequest(request.method, request.path_info, headers, body))
        return _response(HttpResponse, early)

    return csrf_exempt(view)


def urls(hooks: Optional[Webhooks] = None) -> list[Any]:
    """URL patterns, one per route (``include(urls(hooks))`` at the root).

    Raises:
        ConfigError, StoreUnavailableError: as ``Webhooks.from_app`` (``hooks`` None).
    """
    from django.urls import path as url_path

    receiver = hooks if hooks is not None else Webhooks.from_app()
    view = webhook_view(receiver)
    return [url_path(route.rule("<str:{}>").lstrip("/"), view, name=f"webhook-{route.name}")
            for route in receiver.routes]


def _int(text: Optional[str]) -> Optional[int]:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _response(cls: Any, response: HookResponse) -> Any:
    out = cls(response.content(), status=response.status, content_type="application/json")
    for name, value in response.headers.items():
        out[name] = value
    return out


_patterns: Optional[list[Any]] = None


def __getattr__(name: str) -> Any:
    """``urlpatterns``, built from the settings the first time Django asks."""
    global _patterns
    if name == "urlpatterns":
        if _patterns is None:
            _patterns = urls()
        return _patterns
    raise AttributeError(name)
