"""What a new operator's mistakes print (docs/operator-trial.md): each message names the
setting to change, the login that was refused, the file that was not found; ``--json``
callers get JSON for usage errors too; the deploy unit's node name is one Celery accepts.

Real Redis (the shared one, and a private password-protected one), the real CLI in this
process (``CliRunner``) and, for what only ``python -m abstractruntime_celery`` does, in a
subprocess.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from click.testing import CliRunner

from abstractruntime_celery import ConfigError, StoreUnavailableError
from abstractruntime_celery.errors import DispatchError, WaitKeyMismatchError
from devkit.redisproc import PrivateRedis, free_port
from tests.conftest import BROKER_URL, STORE_URL

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "tests.workflows:registry"
DEAD_REDIS = f"redis://127.0.0.1:{free_port()}/10"


@pytest.fixture
def env(settings: Any) -> dict[str, str]:
    """An operator's shell beside the workers of this test."""
    return {"ABSTRACTRUNTIME_CELERY_STORE_URL": STORE_URL, "ABSTRACTRUNTIME_CELERY_KEY_PREFIX": settings.key_prefix,
            "ABSTRACTRUNTIME_CELERY_BROKER_URL": BROKER_URL, "ABSTRACTRUNTIME_CELERY_QUEUE": settings.queue,
            "ABSTRACTRUNTIME_CELERY_REGISTRY": REGISTRY}


@pytest.fixture
def cli(env: dict[str, str]) -> Callable[..., Any]:
    from abstractruntime_celery.cli import main

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


def test_a_missing_store_url_names_the_variable_to_set(prefix: str) -> None:
    from abstractruntime_celery import Settings
    from abstractruntime_celery.driver import build
    from tests.workflows import registry

    with pytest.raises(ConfigError) as info:
        build(Settings(key_prefix=prefix), registry, distributed=True, broker_url=BROKER_URL)
    message = str(info.value)
    assert "memory:// (the default when none is set)" in message
    assert "ABSTRACTRUNTIME_CELERY_STORE_URL" in message and "abstractruntime_store_url" in message


def test_a_wrong_password_is_a_refused_login_not_an_unreachable_host(tmp_path: Path) -> None:
    from abstractruntime_celery.stores.redis.connection import connect, redis_errors

    secret = "s3cret-trial"
    with PrivateRedis(tmp_path / "redis", aof=False, password=secret) as server:
        for url in (f"redis://:wrong-pw@127.0.0.1:{server.port}/0", f"redis://127.0.0.1:{server.port}/0"):
            client = connect(url)
            with pytest.raises(StoreUnavailableError) as info, redis_errors(client):
                client.ping()
            message = str(info.value)
            assert f"Redis at 127.0.0.1:{server.port} refused the login" in message, message
            assert "wrong-pw" not in message and secret not in message
    with pytest.raises(StoreUnavailableError, match=r"^Cannot reach Redis at 127\.0\.0\.1:"):
        client = connect(DEAD_REDIS)
        with redis_errors(client):
            client.ping()


def test_no_wait_key_is_said_as_such() -> None:
    message = str(WaitKeyMismatchError("r1", "order-paid", None))
    assert "wait_key mismatch: expected 'order-paid', got no key" in message  # the seed's words first
    assert "'None'" not in message
    assert "got 'other'" in str(WaitKeyMismatchError("r1", "order-paid", "other"))


def test_a_dispatch_error_gives_the_advice_that_fits_what_was_stored() -> None:
    cause = "redis://127.0.0.1:1/9: OperationalError: Connection refused."
    start = str(DispatchError("r1", "start", cause))
    assert "Connection refused. The sweep" in start and ".." not in start
    assert "run_id='r1'" in start
    event = DispatchError("r1", "event", cause)
    event.event_id = "e1"  # as Driver.deliver sets it
    assert "do not send the event again" in str(event) and "start it again" not in str(event)
    resumed = str(DispatchError("r1", "resumed", cause))
    assert "nothing needs sending again" in resumed and "start it again" not in resumed


def test_payload_file_mistakes_and_unknown_runs(cli: Callable[..., Any], tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    result = cli("runs", "respond", "some-run", "--payload", f"@{missing}")
    assert result.exit_code == 2 and f"@{missing}: cannot read it" in result.stderr, result.stderr
    assert "is not JSON" not in result.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{approved: true}")
    result = cli("runs", "respond", "some-run", "--payload", f"@{bad}")
    assert result.exit_code == 2 and "--payload is not JSON" in result.stderr, result.stderr
    result = cli("runs", "show", "no-such-run")
    assert result.exit_code == 3 and "--store and --prefix" in result.stderr, result.stderr
    shown = json.loads(cli("runs", "show", "no-such-run", "--json").stdout)
    assert shown["exit_code"] == 3 and "--prefix" not in shown["message"]


def test_pausing_a_run_that_asks_a_user_says_it_was_not_paused(cli: Callable[..., Any], celery_app: Any,
                                                               settings: Any, worker: Any) -> None:
    from abstractruntime_celery import create_scheduled_runtime
    from tests.workflows import registry

    sr = create_scheduled_runtime(app=celery_app, settings=settings, registry=registry, auto_start=False)
    try:
        run_id, state = sr.run("ask", vars={}, timeout=20)
        assert state.status.value == "waiting"
        result = cli("runs", "pause", run_id)
        assert result.exit_code == 0 and f"{run_id}: not paused" in result.stderr, result.stderr
        assert json.loads(cli("runs", "pause", run_id, "--json").stdout)["runs"][0]["paused"] is False
        event_run, _ = sr.run("event", vars={}, timeout=20)
        result = cli("runs", "pause", event_run)
        assert result.exit_code == 0 and "(paused)" in result.stdout and "not paused" not in result.stderr
    finally:
        sr.stop()


@pytest.fixture
def subprocess_env(env: dict[str, str]) -> Iterator[dict[str, str]]:
    import os

    yield {**os.environ, **env, "PYTHONPATH": str(ROOT)}


def test_json_callers_get_json_for_usage_errors_and_metrics_serve_takes_the_target_options(
        subprocess_env: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "abstractruntime_celery"]
    procs = {
        "status": subprocess.Popen([*cmd, "runs", "list", "--status", "bogus", "--json"], cwd=ROOT,
                                   env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        "metrics": subprocess.Popen([*cmd, "metrics", "serve", "--port", str(free_port()), "--store", DEAD_REDIS],
                                    cwd=ROOT, env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True),
    }
    out = {name: (*p.communicate(timeout=60), p.returncode) for name, p in procs.items()}
    stdout, stderr, code = out["status"]
    assert code == 2, stderr
    body = json.loads(stdout)
    assert body["ok"] is False and body["error"] == "usage" and "'bogus'" in body["message"]
    assert "Usage:" not in stdout + stderr
    stdout, stderr, code = out["metrics"]
    assert code == 4, stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("abstractruntime-celery: unreachable:"), stderr
    assert "Traceback" not in stderr


def test_the_deploy_units_node_name_is_one_celery_accepts() -> None:
    from celery.utils.nodenames import host_format

    unit = (ROOT / "deploy" / "systemd" / "abstractruntime-worker@.service").read_text()
    exec_start = re.search(r"^ExecStart=(.*?)(?<!\\)$", unit.replace("\\\n", " "), re.MULTILINE)
    assert exec_start, "no ExecStart"
    words = shlex.split(exec_start.group(1))
    # What systemd hands to Celery for instance "w1" on host web1: %i, %H and %% are systemd's.
    node = words[words.index("-n") + 1].replace("%%", "\0").replace("%i", "w1") \
        .replace("%H", "web1.example.com").replace("\0", "%")
    assert host_format(node, host="web1.example.com") == "w1@web1.example.com"


def test_health_without_a_sweep_names_the_queue_a_worker_must_consume(cli: Callable[..., Any],
                                                                     settings: Any) -> None:
    result = cli("health", "--json")
    assert result.exit_code == 1, result.stdout
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert not checks["sweep"]["ok"]
    assert f"a worker consuming queue {settings.queue!r}" in checks["sweep"]["detail"], checks["sweep"]


def test_a_registry_module_not_found_says_where_it_is_imported_from(tmp_path: Path, prefix: str) -> None:
    from abstractruntime import WorkflowRegistry

    from abstractruntime_celery import Settings
    from abstractruntime_celery.driver import build
    from abstractruntime_celery.registry import load_registry
    from abstractruntime_celery.startcheck import describe

    with pytest.raises(ConfigError, match=r"No module named 'myap'.*start the process in the directory"):
        load_registry("myap.workflows:registry")
    broken = tmp_path / "brokenwf.py"
    broken.write_text("import not_installed_dependency_xyz\n")
    sys.path.insert(0, str(tmp_path))
    try:  # a module that is found but imports a missing one: its own error, no hint about where
        with pytest.raises(ConfigError) as info:
            load_registry("brokenwf:registry")
        assert "not_installed_dependency_xyz" in str(info.value) and "PYTHONPATH" not in str(info.value)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("brokenwf", None)
    driver = build(Settings(store_url=STORE_URL, key_prefix=prefix), WorkflowRegistry())
    assert describe(driver)[0] == "registry not set: 0 workflow(s): (none)"
