"""FastAPI: the runtime lives as long as the app (a lifespan) and reaches endpoints as a
dependency.

::

    from abstractruntime_celery.contrib.fastapi import Runtime, runtime_lifespan, start_run
    from shop.celery import app as celery_app          # install(celery_app, registry=...) was called

    app = FastAPI(lifespan=runtime_lifespan(celery_app))

    @app.post("/signups")
    def signup(body: SignupIn, sr: Runtime) -> dict:
        return {"run_id": start_run(sr, "onboarding", {"email": body.email})}

The runtime is built when the app starts (a malformed setting, a registry that cannot be
imported or a store that cannot be reached stops the start), shared by every request, and
stopped when the app shuts down. Its calls block (``respond(wait=True)`` waits for a worker):
declare endpoints that use it with ``def``, which FastAPI runs in its thread pool, or pass
``wait=False``.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Annotated, Any, AsyncIterator, Callable, Optional

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from ..errors import ConfigError
from ..runtime import ScheduledRuntime, create_scheduled_runtime
from .process import check_start, make_start

__all__ = ["runtime_lifespan", "get_runtime", "Runtime", "start_run", "STATE_ATTR"]

#: Where the runtime sits on ``app.state``.
STATE_ATTR = "abstractruntime"


def runtime_lifespan(celery_app: Any, *, lifespan: Optional[Callable[[Any], Any]] = None,
                     **options: Any) -> Callable[[Any], Any]:
    """A FastAPI ``lifespan`` that builds the runtime on ``celery_app`` (its installed registry
    and settings; ``options`` go to ``create_scheduled_runtime``) at start and stops it at
    shutdown. ``lifespan``: your own, run inside it.

    Raises:
        ConfigError: ``celery_app`` is not a Celery app (now); at start, as ``create_scheduled_runtime``.
    """
    from celery import Celery

    if not isinstance(celery_app, Celery):
        raise ConfigError(f"runtime_lifespan needs a Celery app, got {type(celery_app).__name__}")
    options.setdefault("auto_start", False)  # a web process runs no sweep loop: beat does

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[Any]:
        sr = await run_in_threadpool(lambda: create_scheduled_runtime(app=celery_app, **options))
        setattr(app.state, STATE_ATTR, sr)
        try:
            if lifespan is None:
                yield None
            else:
                async with lifespan(app) as state:
                    yield state
        finally:
            delattr(app.state, STATE_ATTR)
            await run_in_threadpool(sr.stop)

    return run


def get_runtime(request: Request) -> ScheduledRuntime:
    """The app's runtime (a dependency: ``sr: Runtime`` or ``Depends(get_runtime)``).

    Raises:
        ConfigError: the app was not created with ``lifespan=runtime_lifespan(...)``.
    """
    sr = getattr(request.app.state, STATE_ATTR, None)
    if sr is None:
        raise ConfigError("No abstractruntime runtime on this app: create it with "
                          "FastAPI(lifespan=runtime_lifespan(celery_app))")
    return sr


#: The dependency as a type: ``def endpoint(sr: Runtime): ...``.
Runtime = Annotated[ScheduledRuntime, Depends(get_runtime)]


def start_run(sr: ScheduledRuntime, workflow_id: str, vars: Optional[dict[str, Any]] = None, *,
              run_id: Optional[str] = None) -> str:
    """Save a run of ``workflow_id``, send its first tick, and return its id.

    Raises:
        UnknownWorkflowError: the registry does not know ``workflow_id``.
        PayloadError: ``vars`` is not a JSON object under ``max_payload_bytes``, or ``run_id``
            is malformed.
        StoreUnavailableError: the store cannot be reached.
        DispatchError: the run is saved but the broker refused its tick (see ``make_start``).
    """
    return make_start(sr, check_start(sr, workflow_id, vars, run_id))
