"""Helpers of the adversarial tests in tests/test_adv_p_*.py: a recording dispatcher and a
way to make a backoff due now (in-process ticks by hand, no timed asserts)."""

from __future__ import annotations

import time
from typing import Any, Optional

from tests._dispatchers import Recorder  # noqa: F401 (re-exported for the round P and Q tests)
from tests.conftest import STORE_URL


def due(driver: Any, run_id: str) -> None:
    """The backoff's end has come (its note says now)."""
    client, key = driver.coord.client, driver.coord.keys.backoff(run_id)
    if client.exists(key):
        client.set(key, repr(time.time() - 1.0), px=client.pttl(key))


def attempts(driver: Any, run_id: str) -> Optional[str]:
    return driver.coord.client.get(driver.coord.keys.attempts(run_id))


def sqlite_extra(store: str, tmp_path: Any) -> dict[str, Any]:
    if store == "sqlite":
        return {"store_url": f"sqlite:///{tmp_path}/runs.db", "coord_url": STORE_URL}
    return {}
