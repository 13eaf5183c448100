"""A user who tests against Celery's own in-process fixtures (``celery.contrib.pytest``:
``celery_app``, ``celery_worker``): point the kit's app and worker at them."""

from __future__ import annotations

from typing import Any

import pytest
from user_workflows import ALL, nap

from abstractruntime_celery.testing import assert_ledger


@pytest.fixture
def arc_registry() -> Any:
    return ALL


@pytest.fixture(scope="session")
def celery_config() -> dict[str, Any]:
    # (the memory broker polls once a second by default: every tick would wait for it)
    return {"broker_transport_options": {"polling_interval": 0.01}}


@pytest.fixture
def arc_celery_app(celery_app: Any) -> Any:
    return celery_app


@pytest.fixture
def arc_worker(celery_worker: Any) -> Any:
    return celery_worker


def test_on_celerys_worker(celery_worker: Any, arc_worker_runtime: Any, arc_clock: Any) -> None:
    # (celery_worker first: it starts before the kit installs its tasks, which it then takes on)
    run_id, _ = arc_worker_runtime.run(nap)
    assert arc_clock.advance(days=1) == [run_id]
    assert_ledger(arc_worker_runtime, run_id, ["start:wait_until", "done"])
