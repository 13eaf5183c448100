"""Helpers of the adversarial tests in tests/test_adv_p_*.py: a recording dispatcher and a
way to make a backoff due now (in-process ticks by hand, no timed asserts)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Optional


class Recorder:
    min_eta_s = 0.0

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Optional[datetime], Optional[str]]] = []

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None,
             message_id: Optional[str] = None) -> None:
        self.sent.append((run_id, reason, eta, message_id))


def due(driver: Any, run_id: str) -> None:
    """The backoff's end has come (its note says now)."""
    client, key = driver.coord.client, driver.coord.keys.backoff(run_id)
    if client.exists(key):
        client.set(key, repr(time.time() - 1.0), px=client.pttl(key))


def attempts(driver: Any, run_id: str) -> Optional[str]:
    return driver.coord.client.get(driver.coord.keys.attempts(run_id))


def sqlite_extra(store: str, tmp_path: Any) -> dict[str, Any]:
    if store == "sqlite":
        return {"store_url": f"sqlite:///{tmp_path}/runs.db", "coord_url": "redis://127.0.0.1:6379/10"}
    return {}
