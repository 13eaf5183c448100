"""The FastAPI example through FastAPI's TestClient (which runs the lifespan) and a real
Celery worker."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from abstractruntime_celery import ConfigError
from abstractruntime_celery.contrib.fastapi import STATE_ATTR, Runtime, runtime_lifespan
from devkit.procs import wait_for

pytestmark = pytest.mark.timeout(120)
TIMEOUT = 30.0


def emails_of(env: dict[str, str], run_id: str) -> list[str]:
    raw = redis.Redis.from_url(env["APISHOP_OUTBOX_URL"]).lrange(env["APISHOP_OUTBOX_KEY"], 0, -1)
    return [m["subject"] for m in map(json.loads, raw) if m["run_id"] == run_id]


def wait_status(client: TestClient, run_id: str, status: str) -> dict[str, Any]:
    def check() -> Any:
        body = client.get(f"/runs/{run_id}").json()
        return body if body.get("status") == status else None

    return wait_for(check, TIMEOUT, f"run {run_id} to be {status}")


def test_signup_waits_for_approval_and_the_answer_completes_it(api_env: dict[str, str], api_worker: Any) -> None:
    from apishop.main import app

    with TestClient(app) as client:
        response = client.post("/signups", json={"email": "ada@example.com"})
        assert response.status_code == 201, response.text
        run_id = response.json()["run_id"]
        assert wait_status(client, run_id, "waiting")["prompt"] == "Approve ada@example.com?"
        assert emails_of(api_env, run_id) == ["Welcome! Your account waits for approval."]

        assert client.post(f"/runs/{run_id}/answer", json={"approved": False}).status_code == 202
        done = wait_status(client, run_id, "completed")
        assert done["output"] == {"email": "ada@example.com", "approved": False}
        assert emails_of(api_env, run_id) == ["Welcome! Your account waits for approval."]  # not activated
        assert client.post(f"/runs/{run_id}/answer", json={"approved": True}).status_code == 409
        assert client.get("/runs/not-a-run").status_code == 404


def test_the_lifespan_builds_one_runtime_with_the_installed_registry_and_stops_it(api_env: dict[str, str]) -> None:
    from apishop.main import app
    from apishop.workflows import registry

    with TestClient(app) as client:
        sr = getattr(app.state, STATE_ATTR)
        assert sr.registry is registry  # named once, in apishop/celery.py
        assert sr.driver.settings.key_prefix == api_env["ABSTRACTRUNTIME_CELERY_KEY_PREFIX"]
        with ThreadPoolExecutor(8) as pool:  # requests from FastAPI's thread pool share it
            statuses = list(pool.map(lambda _: client.get("/runs/missing-run").status_code, range(16)))
        assert statuses == [404] * 16 and getattr(app.state, STATE_ATTR) is sr
    assert not hasattr(app.state, STATE_ATTR)


def test_an_app_without_the_lifespan_gets_a_clear_error() -> None:
    bare = FastAPI()

    @bare.get("/x")
    def x(sr: Runtime) -> dict[str, Any]:
        return {}

    with TestClient(bare) as client, pytest.raises(ConfigError, match="runtime_lifespan"):
        client.get("/x")
    with pytest.raises(ConfigError, match="Celery app"):
        runtime_lifespan(object())


def test_your_own_lifespan_runs_inside(api_env: dict[str, str]) -> None:
    from contextlib import asynccontextmanager

    from apishop.celery import app as celery_app

    seen: list[str] = []

    @asynccontextmanager
    async def mine(app: FastAPI) -> Any:
        seen.append("start:" + str(hasattr(app.state, STATE_ATTR)))
        yield
        seen.append("stop")

    app = FastAPI(lifespan=runtime_lifespan(celery_app, lifespan=mine))
    with TestClient(app):
        pass
    assert seen == ["start:True", "stop"]
