"""Where the Django example is and the environment its tests give it (shared by conftest.py
and the runner, test_django_suite.py)."""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent
ROOT = EXAMPLE.parent.parent
RUNNER = "test_django_suite.py"
REDIS = os.environ.get("ARC_TEST_REDIS", "redis://127.0.0.1:6379")


def example_env(tmp: Path, prefix: str) -> dict[str, str]:
    """The environment the example project reads (mysite/settings.py: ``MYSITE_*``): the
    suite's Redis databases (9 broker, 10 store, 14 side effects), short timings."""
    return {"MYSITE_BROKER_URL": f"{REDIS}/9", "MYSITE_STORE_URL": f"{REDIS}/10",
            "MYSITE_OUTBOX_URL": f"{REDIS}/14", "MYSITE_KEY_PREFIX": prefix, "MYSITE_QUEUE": f"{prefix}q",
            "MYSITE_ORPHAN_GRACE_S": "1", "MYSITE_SWEEP_INTERVAL_S": "1", "MYSITE_DB": str(tmp / "db.sqlite3")}
