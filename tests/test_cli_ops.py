"""The operator CLI (``runs``, ``stats``, ``sweep``, ``health``) on real Redis, with a real
in-process worker where a run must move; the process-level behaviour (one line and an
exit code for a dead Redis or broker, a masked password) in real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis
from abstractruntime import RunState, RunStatus, WaitReason, WaitState
from click.testing import CliRunner

from devkit.redisproc import free_port
from tests.conftest import BROKER_URL, FX_URL, STORE_URL, make_settings

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "tests.workflows_cli:registry"


@pytest.fixture
def cli_settings(prefix: str) -> Any:
    # One failure fails a run (the gate), quickly; no jitter.
    return make_settings(prefix, tick_max_attempts=1, retry_backoff_s=0.05, retry_jitter=False)


@pytest.fixture
def env(cli_settings: Any) -> dict[str, str]:
    """What an operator's shell beside the workers holds."""
    return {"ABSTRACTRUNTIME_CELERY_STORE_URL": STORE_URL, "ABSTRACTRUNTIME_CELERY_KEY_PREFIX": cli_settings.key_prefix,
            "ABSTRACTRUNTIME_CELERY_BROKER_URL": BROKER_URL, "ABSTRACTRUNTIME_CELERY_QUEUE": cli_settings.queue,
            "ABSTRACTRUNTIME_CELERY_REGISTRY": REGISTRY}


@pytest.fixture
def cli(env: dict[str, str]) -> Callable[..., Any]:
    """Run the CLI in this process (CliRunner); returns the click Result."""
    from abstractruntime_celery.cli import main

    def invoke(*args: str, extra_env: dict[str, str] | None = None) -> Any:
        return CliRunner().invoke(main, list(args), env={**env, **(extra_env or {})}, catch_exceptions=False)

    return invoke


def as_json(result: Any) -> dict[str, Any]:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


@pytest.fixture
def sr(cli_settings: Any) -> Iterator[Any]:
    """The test's own API view of the cluster, to start runs and read them back."""
    from abstractruntime_celery import create_scheduled_runtime
    from abstractruntime_celery.app import make_app
    from tests.workflows_cli import registry

    app = make_app(BROKER_URL, name=f"arc-cli-{cli_settings.queue}", config_module=None)
    runtime = create_scheduled_runtime(app=app, settings=cli_settings, registry=registry, auto_start=False)
    yield runtime
    with app.connection_for_write() as conn:
        conn.default_channel.client.delete(cli_settings.queue)


@pytest.fixture
def cli_worker(sr: Any, cli_settings: Any) -> Iterator[Any]:
    from celery.contrib.testing.worker import start_worker

    with start_worker(sr.scheduler.app, pool="threads", concurrency=2, perform_ping_check=False,
                      queues=[cli_settings.queue], shutdown_timeout=10, loglevel="WARNING") as w:
        yield w


def flag_key(prefix: str) -> str:
    return f"{prefix}gate-open"


@pytest.fixture
def flag(prefix: str) -> Iterator[str]:
    key = flag_key(prefix)
    yield key
    redis.Redis.from_url(FX_URL).delete(key)


def wait_status(sr: Any, run_id: str, status: RunStatus, timeout: float = 20.0) -> RunState:
    return sr.wait_for(run_id, timeout=timeout, until=lambda r: r.status == status)


# --- acting on runs through a worker -----------------------------------------------------

def test_respond_pause_resume_cancel(cli: Any, sr: Any, cli_worker: Any, cli_settings: Any) -> None:
    from tests.workflows_cli import registry

    run_id, state = sr.run(registry.get("approval"), vars={"key": "approval"}, timeout=20)
    assert state.status == RunStatus.WAITING

    listed = as_json(cli("runs", "list", "--status", "waiting", "--reason", "event", "--json"))
    assert [r["run_id"] for r in listed["runs"]] == [run_id] and listed["next"] is None
    assert listed["target"]["prefix"] == cli_settings.key_prefix and listed["target"]["queue"] == cli_settings.queue

    shown = as_json(cli("runs", "show", run_id, "--json"))
    assert shown["run"]["waiting"]["wait_key"] == "approval" and shown["run"]["status"] == "waiting"
    assert shown["ledger_total"] >= 2 and shown["leased"] is False
    tail = as_json(cli("runs", "show", run_id, "--ledger", "1", "--json"))
    assert len(tail["ledger"]) == 1 and tail["ledger"][0] == shown["ledger"][-1]

    assert cli("runs", "pause", run_id).exit_code == 0
    refused = cli("runs", "respond", run_id, "--key", "approval", "--payload", '{"ok": true}')
    assert refused.exit_code == 1 and "paused" in refused.stderr and refused.stderr.count("\n") == 1
    assert cli("runs", "resume", run_id).exit_code == 0
    wrong = cli("runs", "respond", run_id, "--key", "other", "--payload", '{"ok": true}', "--json")
    assert wrong.exit_code == 1 and as_json(wrong)["error"] == "refused"
    too_big = cli("runs", "respond", run_id, "--key", "approval", "--payload", json.dumps({"x": "y" * 300_000}))
    assert too_big.exit_code == 2 and "over the limit" in too_big.stderr

    answered = as_json(cli("runs", "respond", run_id, "--key", "approval", "--payload", '{"ok": true}',
                           "--wait", "--timeout", "20", "--json"))
    assert answered["applied"] and answered["run"]["status"] == "completed"
    assert sr.get_state(run_id).output == {"event": {"ok": True}}
    again = cli("runs", "respond", run_id, "--payload", '{"ok": true}')
    assert again.exit_code == 1 and "not waiting" in again.stderr

    keyless, _ = sr.run(registry.get("approval"), vars={"key": "approval"}, timeout=20)
    assert cli("runs", "respond", keyless, "--payload", '{"n": 2}', "--wait").exit_code == 0
    assert sr.get_state(keyless).output == {"event": {"n": 2}}

    other, _ = sr.run(registry.get("approval"), vars={"key": "approval"}, timeout=20)
    unregistered = cli("runs", "respond", other, "--key", "approval", "--payload", "{}",
                       extra_env={"ABSTRACTRUNTIME_CELERY_REGISTRY": ""})
    assert unregistered.exit_code == 2 and "ABSTRACTRUNTIME_CELERY_REGISTRY" in unregistered.stderr
    cancelled = as_json(cli("runs", "cancel", other, "--children", "--reason", "operator", "--json"))
    assert [r["status"] for r in cancelled["runs"]] == ["cancelled"]
    assert sr.get_state(other).status == RunStatus.CANCELLED


def test_retry_restarts_a_failed_run_at_its_failed_node(cli: Any, sr: Any, cli_worker: Any, flag: str,
                                                         fx: str) -> None:
    from tests.workflows_cli import registry

    run_id = sr.start(workflow=registry.get("gate"), vars={"flag": flag})
    failed = wait_status(sr, run_id, RunStatus.FAILED)
    assert failed.current_node == "gate" and "gate closed" in (failed.error or "")

    # Still closed: the retry runs the gate again (not 'first'), and it fails after one new attempt.
    retried = as_json(cli("runs", "retry", run_id, "--json"))
    assert retried["runs"][0]["status"] == "running" and retried["runs"][0]["current_node"] == "gate"
    again = sr.wait_for(run_id, timeout=20, until=lambda r: r.status == RunStatus.FAILED
                        and r.vars["_runtime"].get("retried", {}).get("count") == 1)
    assert "Tick failed 1 times" in (again.error or "")  # a new attempt count, not 2

    redis.Redis.from_url(FX_URL).set(flag, "1")
    assert cli("runs", "retry", run_id).exit_code == 0
    done = wait_status(sr, run_id, RunStatus.COMPLETED)
    assert done.output == {"ok": True, "passed_first": 1}  # 'first' ran once: restarted at 'gate'
    assert done.vars["_runtime"]["retried"]["count"] == 2

    refused = cli("runs", "retry", run_id)
    assert refused.exit_code == 1 and "not FAILED" in refused.stderr
    missing = cli("runs", "retry", "no-such-run")
    assert missing.exit_code == 3 and "not found" in missing.stderr


def test_retry_refused_for_a_child_whose_parent_took_its_failure(cli: Any, sr: Any, cli_worker: Any,
                                                                 flag: str) -> None:
    from tests.workflows_cli import registry

    parent = sr.start(workflow=registry.get("gated-parent"), vars={"flag": flag})
    done = wait_status(sr, parent, RunStatus.COMPLETED)
    child = done.vars["child"]["sub_run_id"]
    assert sr.get_state(child).status == RunStatus.FAILED

    refused = cli("runs", "retry", child, "--json")
    assert refused.exit_code == 1
    body = as_json(refused)
    assert body["error"] == "refused" and "already taken its failure" in body["message"] and parent in body["message"]
    assert sr.get_state(child).status == RunStatus.FAILED  # nothing changed

    children = as_json(cli("runs", "list", "--parent", parent, "--json"))
    assert [r["run_id"] for r in children["runs"]] == [child]
    shown = as_json(cli("runs", "show", parent, "--json"))
    assert [c["run_id"] for c in shown["children"]] == [child]


def test_retry_of_a_child_its_paused_parent_still_waits_on(cli: Any, sr: Any, cli_worker: Any, flag: str) -> None:
    from tests.workflows_cli import registry

    parent = sr.start(workflow=registry.get("gated-parent"), vars={"flag": flag})
    waiting = wait_status(sr, parent, RunStatus.WAITING)
    assert waiting.waiting is not None and waiting.waiting.reason == WaitReason.SUBWORKFLOW
    child = str(waiting.waiting.details["sub_run_id"]) if waiting.waiting.details else waiting.waiting.wait_key.split(":", 1)[1]
    sr.pause_run(parent)  # it cannot take the failure while paused
    wait_status(sr, child, RunStatus.FAILED)

    redis.Redis.from_url(FX_URL).set(flag, "1")
    assert cli("runs", "retry", child).exit_code == 0
    wait_status(sr, child, RunStatus.COMPLETED)
    assert cli("runs", "resume", parent).exit_code == 0
    done = wait_status(sr, parent, RunStatus.COMPLETED)
    assert done.output["child"]["output"]["ok"] is True


def test_concurrent_retries_restart_a_run_once(sr: Any) -> None:
    """Compare-and-set: of four retries at once, one restarts the run, three are refused."""
    import threading

    from abstractruntime_celery import RetryRefusedError

    failed = RunState(run_id=f"failed-{uuid.uuid4().hex[:8]}", workflow_id="gate", status=RunStatus.FAILED,
                      current_node="gate", error="boom")
    sr.driver.run_store.save(failed)
    barrier, outcomes = threading.Barrier(4), []

    def retry() -> None:
        barrier.wait()
        try:
            outcomes.append(sr.retry_run(failed.run_id).status)
        except RetryRefusedError:
            outcomes.append("refused")

    threads = [threading.Thread(target=retry) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(map(str, outcomes)) == sorted([str(RunStatus.RUNNING)] + ["refused"] * 3)
    state = sr.get_state(failed.run_id)
    assert state.status == RunStatus.RUNNING and state.vars["_runtime"]["retried"] == {
        "count": 1, "last_error": "boom", "node": "gate"}


# --- reading, paging, health --------------------------------------------------------------

def test_list_pages_with_a_cursor_and_filters(cli: Any, sr: Any) -> None:
    from tests.workflows_cli import registry

    ids = []
    for _ in range(5):
        ids.append(sr.driver.start_run(registry.get("approval"), dispatch=False))
        time.sleep(0.002)  # distinct update times, newest first
    ids.append(sr.driver.start_run(registry.get("gate"), dispatch=False))
    seen: list[str] = []
    after: list[str] = []
    for _ in range(5):
        page = as_json(cli("runs", "list", "--workflow", "approval", "--limit", "2", *after, "--json"))
        seen += [r["run_id"] for r in page["runs"]]
        if page["next"] is None:
            break
        after = ["--after", page["next"]]
    assert seen == ids[:5][::-1]
    everything = as_json(cli("runs", "list", "--status", "running", "--json"))
    assert {r["run_id"] for r in everything["runs"]} == set(ids)
    human = cli("runs", "list", "--limit", "1")
    assert human.exit_code == 0 and ids[-1] in human.stdout and "--after" in human.stdout
    assert cli("runs", "list", "--after", "garbage").exit_code == 2

    # Runs updated at the same instant (one index score): the cursor breaks the tie by run id.
    same = datetime.now(timezone.utc).isoformat()
    for rid in ("tie-a", "tie-b", "tie-c"):
        sr.driver.run_store.save(RunState(run_id=rid, workflow_id="tied", status=RunStatus.RUNNING,
                                          current_node="n", updated_at=same, created_at=same))
    tied: list[str] = []
    after = []
    for _ in range(5):
        page = as_json(cli("runs", "list", "--workflow", "tied", "--limit", "1", *after, "--json"))
        tied += [r["run_id"] for r in page["runs"]]
        if page["next"] is None:
            break
        after = ["--after", page["next"]]
    assert tied == ["tie-c", "tie-b", "tie-a"]
    assert cli("runs", "show", "no-such-run").exit_code == 3


def test_health_stats_and_sweep(cli: Any, sr: Any, cli_settings: Any) -> None:
    from abstractruntime_celery.cli import main

    fresh = cli("health", "--json")
    assert fresh.exit_code == 1
    checks = {c["name"]: c for c in as_json(fresh)["checks"]}
    assert checks["store"]["ok"] and checks["broker"]["ok"] and not checks["sweep"]["ok"] and checks["overdue"]["ok"]

    swept = as_json(cli("sweep", "--json"))
    assert swept["sweep"]["skipped"] is False
    healthy = cli("health")
    assert healthy.exit_code == 0 and "healthy" in healthy.stdout
    assert as_json(cli("stats", "--json"))["stats"]["sweeps"] >= 1
    table = cli("stats")
    assert table.exit_code == 0 and "sweeps" in table.stdout and cli_settings.key_prefix in table.stdout

    # A run whose timer was due 10 minutes ago, never ticked: overdue.
    past = (datetime.now(timezone.utc) - timedelta(minutes=10)).isoformat()
    late = RunState(run_id=f"late-{uuid.uuid4().hex[:8]}", workflow_id="approval", status=RunStatus.WAITING,
                    current_node="wait", waiting=WaitState(reason=WaitReason.UNTIL, until=past))
    sr.driver.run_store.save(late)
    overdue = cli("health", "--overdue-after", "60", "--json")
    assert overdue.exit_code == 1
    check = {c["name"]: c for c in as_json(overdue)["checks"]}["overdue"]
    assert not check["ok"] and check["data"]["runs"] == [late.run_id]
    assert cli("health", "--overdue-after", "3600").exit_code == 0

    # Programmatic, as a Django management command mirrors it: the exit code comes back.
    old = dict(os.environ)
    try:
        os.environ.update({"ABSTRACTRUNTIME_CELERY_STORE_URL": STORE_URL, "ABSTRACTRUNTIME_CELERY_BROKER_URL": BROKER_URL})
        assert main(["health", "--prefix", cli_settings.key_prefix, "--overdue-after", "3600", "--json"],
                    standalone_mode=False) == 0
        assert main(["runs", "show", "no-such-run", "--prefix", cli_settings.key_prefix], standalone_mode=False) == 3
    finally:
        os.environ.clear()
        os.environ.update(old)


# --- a real process: what an operator sees when a service is down --------------------------

def _proc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "abstractruntime_celery", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=60)


def test_a_dead_redis_is_one_line_and_exit_code_4(prefix: str, cli: Any) -> None:
    port = free_port()
    dead = f"redis://:hunter2@127.0.0.1:{port}/10"
    proc = _proc("runs", "list", "--store", dead, "--prefix", prefix)
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"127.0.0.1:{port}" in proc.stderr and "unreachable" in proc.stderr and "store" in proc.stderr
    assert "hunter2" not in proc.stderr and "Traceback" not in proc.stderr

    as_json_run = cli("stats", "--store", dead, "--json")
    assert as_json_run.exit_code == 4 and as_json(as_json_run)["error"] == "unreachable"
    assert "hunter2" not in as_json_run.stdout

    # A probe: exit 1 (unhealthy), one line naming both services.
    probe = cli("health", "--store", dead, "--broker", f"redis://127.0.0.1:{port}/9")
    assert probe.exit_code == 1 and probe.stdout == "" and probe.stderr.count("\n") == 1, probe.stderr
    assert "store" in probe.stderr and "broker" in probe.stderr and "hunter2" not in probe.stderr
    checks = as_json(cli("health", "--store", dead, "--json"))["checks"]
    assert [(c["name"], c["ok"]) for c in checks] == [("store", False), ("broker", True)]


def test_a_dead_broker_changes_nothing_and_says_so(cli: Any, sr: Any) -> None:
    from abstractruntime_celery.runstate import paused
    from tests.workflows_cli import registry

    run_id = sr.driver.start_run(registry.get("approval"), dispatch=False)
    sr.pause_run(run_id)
    port = free_port()
    result = cli("runs", "resume", run_id, "--broker", f"redis://127.0.0.1:{port}/9")
    assert result.exit_code == 4, result.stderr
    assert result.stderr.count("\n") == 1 and "broker" in result.stderr and str(port) in result.stderr
    assert paused(sr.get_state(run_id))  # the check came first: the run is still paused

    secret_broker = BROKER_URL.replace("redis://", "redis://:s3cret@", 1)
    shown = cli("runs", "show", run_id, "--broker", secret_broker)
    assert shown.exit_code == 0, shown.stderr
    assert secret_broker.replace("s3cret", "***") in shown.stdout and "s3cret" not in shown.stdout


def test_a_read_on_a_prefix_nothing_used_warns_and_writes_nothing(cli: Any, sr: Any, cli_settings: Any) -> None:
    """A mistyped ``--prefix`` read as an empty cluster (stats all zeros) and left a layout
    mark under it. Now reads leave no key, and say the prefix is unused; the first run
    created under the prefix marks its layout (as a worker's start does)."""
    from abstractruntime_celery.keys import LAYOUT_VERSION

    client = redis.Redis.from_url(STORE_URL)
    typo = f"{cli_settings.key_prefix}typo:"
    for args in (("stats",), ("runs", "list"), ("health",)):
        result = cli(*args, "--prefix", typo)
        assert "nothing under key prefix" in result.stderr and typo in result.stderr, (args, result.stderr)
    assert "nothing under key prefix" in as_json(cli("stats", "--json", "--prefix", typo))["warning"]
    assert client.keys(f"{typo}*") == []  # a look leaves nothing behind

    run_id = sr.start(workflow=sr.driver.registry.get("approval"), vars={})
    assert client.get(f"{cli_settings.key_prefix}layout") == str(LAYOUT_VERSION).encode()
    shown = cli("runs", "show", run_id)
    assert shown.exit_code == 0 and "nothing under key prefix" not in shown.stderr
    assert "warning" not in as_json(cli("stats", "--json"))
