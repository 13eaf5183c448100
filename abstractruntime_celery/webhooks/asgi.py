"""The webhook receiver as an ASGI app (Starlette, FastAPI, uvicorn).

Run it alone (``abstractruntime-celery webhooks serve``, or
``uvicorn abstractruntime_celery.webhooks.asgi:app``), or mount it in your app at
the root of its routes' paths. The body is read up to the size limit and no
further; the receiver's blocking work runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Optional

from .http import HookRequest, HookResponse, lower_headers
from .receiver import Webhooks

log = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class WebhookApp:
    """An ASGI app around a ``Webhooks`` (built from the settings at startup if not given)."""

    def __init__(self, hooks: Optional[Webhooks] = None) -> None:
        self._hooks = hooks

    @property
    def hooks(self) -> Webhooks:
        """Raises what ``Webhooks.from_app`` raises (on first use, when none was given)."""
        if self._hooks is None:
            self._hooks = Webhooks.from_app()
        return self._hooks

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Build the receiver at startup: a setup mistake stops the server before it serves."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await asyncio.get_running_loop().run_in_executor(None, lambda: self.hooks)
                except Exception as exc:
                    log.critical("webhooks cannot start: %s: %s", type(exc).__name__, exc)
                    await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        hooks = self.hooks
        headers = lower_headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", []))
        early = hooks.too_large(_int(headers.get("content-length")))
        if early is not None:
            await _answer(send, early)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > hooks.max_body_bytes:  # stop reading: the rest is never buffered
                await _answer(send, hooks.too_large(size) or HookResponse(413, {"error": "body_too_large"}))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        request = HookRequest(scope.get("method", "GET"), _full_path(scope), headers, b"".join(chunks))
        response = await asyncio.get_running_loop().run_in_executor(None, hooks.handle, request)
        await _answer(send, response)


def _full_path(scope: dict[str, Any]) -> str:
    """The request's path from the server's root (Starlette's Mount keeps it in ``path``
    and sets ``root_path``; older versions strip the mount from ``path``)."""
    path, root = scope.get("path", "/"), scope.get("root_path", "")
    return path if not root or path.startswith(root) else root + path


def _int(text: Optional[str]) -> Optional[int]:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


async def _answer(send: Send, response: HookResponse) -> None:
    content = response.content()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def create_app(hooks: Optional[Webhooks] = None) -> WebhookApp:
    """An ASGI app for ``hooks`` (default: built from the settings at startup)."""
    return WebhookApp(hooks)


#: ``uvicorn abstractruntime_celery.webhooks.asgi:app``: settings from the environment.
app = WebhookApp()
