"""``abstractruntime-celery webhooks serve``: the ASGI receiver under uvicorn."""

from __future__ import annotations

import click


@click.group()
def webhooks() -> None:
    """Receive signed webhooks (Standard Webhooks) as events and run starts."""


@webhooks.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--log-level", default="info", show_default=True, help="uvicorn's log level.")
def serve(host: str, port: int, log_level: str) -> None:
    """Serve the webhook routes (settings and secrets from ABSTRACTRUNTIME_CELERY_*).

    The receiver is built before the server listens: a wrong setting, secret, route or
    an unreachable store stops it at once.
    """
    import uvicorn

    from .asgi import create_app
    from .receiver import Webhooks

    hooks = Webhooks.from_app()
    click.echo(f"webhooks: {len(hooks.routes)} route(s): " + ", ".join(r.path for r in hooks.routes))
    uvicorn.run(create_app(hooks), host=host, port=port, log_level=log_level, lifespan="on")
