"""The Flask example, driven through Flask's test client and a real ``celery -A
flaskshop.make_celery worker`` subprocess (the README's command)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import redis

from abstractruntime_celery import ConfigError
from devkit.procs import Proc, wait_for

pytestmark = pytest.mark.timeout(120)
TIMEOUT = 30.0


def emails_of(env: dict[str, str], run_id: str) -> list[str]:
    raw = redis.Redis.from_url(env["FLASKSHOP_OUTBOX_URL"]).lrange(env["FLASKSHOP_OUTBOX_KEY"], 0, -1)
    return [m["subject"] for m in map(json.loads, raw) if m["run_id"] == run_id]


def wait_status(client: Any, run_id: str, status: str) -> dict[str, Any]:
    def check() -> Any:
        body = client.get(f"/runs/{run_id}").get_json()
        return body if body.get("status") == status else None

    return wait_for(check, TIMEOUT, f"run {run_id} to be {status}")


def test_signup_waits_for_approval_and_the_answer_completes_it(shop: Any, shop_worker: Proc,
                                                               shop_env: dict[str, str]) -> None:
    client = shop.test_client()
    response = client.post("/signups", json={"email": "ada@example.com"})
    assert response.status_code == 201, response.data
    run_id = response.get_json()["run_id"]
    assert wait_status(client, run_id, "waiting")["prompt"] == "Approve ada@example.com?"
    assert emails_of(shop_env, run_id) == ["Welcome! Your account waits for approval."]

    assert client.post(f"/runs/{run_id}/answer", json={"approved": True}).status_code == 202
    assert wait_status(client, run_id, "completed")["output"] == {"email": "ada@example.com", "approved": True}
    assert emails_of(shop_env, run_id) == ["Welcome! Your account waits for approval.", "Your account is active."]
    assert client.post(f"/runs/{run_id}/answer", json={"approved": True}).status_code == 409
    assert client.get("/runs/not-a-run").status_code == 404
    assert client.post("/signups", json={}).status_code == 400


def test_the_config_keys_reach_the_celery_app_and_the_runtime(shop: Any, shop_env: dict[str, str]) -> None:
    from flaskshop import arc

    with shop.app_context():
        s = arc.runtime.driver.settings
        assert s.key_prefix == shop_env["FLASKSHOP_ABSTRACTRUNTIME_CELERY_KEY_PREFIX"]
        assert s.queue == shop_env["FLASKSHOP_ABSTRACTRUNTIME_CELERY_QUEUE"] and s.orphan_grace_s == 1.0
        assert "onboarding" in arc.runtime.registry
        assert arc.celery.conf.broker_url == shop_env["FLASKSHOP_ABSTRACTRUNTIME_CELERY_BROKER_URL"]


def test_one_runtime_per_app_and_process_shared_by_threads(shop: Any) -> None:
    from flaskshop import arc

    got: list[Any] = []
    barrier = threading.Barrier(8)

    def use() -> None:
        barrier.wait()
        with shop.app_context():
            got.append(arc.runtime)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(g is got[0] for g in got)
    assert shop.extensions["abstractruntime"].runtime.builds == 1


def test_a_malformed_setting_fails_at_init_app(shop_env: dict[str, str]) -> None:
    from flaskshop import create_app

    with pytest.raises(ConfigError, match="orphan_grace_s"):
        create_app({"ABSTRACTRUNTIME_CELERY_ORPHAN_GRACE_S": -1})
