"""The deploy kit (``deploy/``) is tested, not just shipped.

Every file is parsed (YAML with pyyaml, units with a systemd-style reader); the Compose
file is validated against the Compose specification's JSON schema (vendored in
``tests/data``, offline); the systemd tools check the units, users and directories where
they exist. Then the exact worker and beat command lines of each kit run against the
suite's Redis, with only the broker and store URLs, the key prefix and the queue changed
(through the variables the files already read), until a demo run completes and beat's
sweep has run. Docker and a Kubernetes cluster are not needed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest
import yaml

from devkit.cleanup import cleanup_broker
from devkit.procs import Proc, wait_for
from devkit.redisproc import free_port
from tests._deploykit import (DEPLOY, ROOT, interpolate, k8s_expand, k8s_object, load_compose, load_k8s,
                              local_argv, parse_env_file, parse_unit, systemd_argv)
from tests.conftest import BROKER_URL, STORE_URL

SYSTEMD = DEPLOY / "systemd"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
WORKER_UNIT = SYSTEMD / "abstractruntime-worker@.service"
BEAT_UNIT = SYSTEMD / "abstractruntime-beat.service"
ENV_FILE = SYSTEMD / "abstractruntime-celery.env"
TIMEOUT = 60.0

pytestmark = pytest.mark.timeout(120)


# --- the files ------------------------------------------------------------------------------

def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    compose = interpolate(load_compose(), {})
    jsonschema.Draft7Validator(schema).validate(compose)
    broken = interpolate(load_compose(), {})
    broken["services"]["worker"]["deploy"]["replicas"] = "two"
    broken["services"]["beat"]["restart_policy"] = "always"
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(broken))
    assert errors, "the schema accepts a malformed file: it checks nothing"


def test_compose_kit_has_redis_two_workers_beat_flower_and_metrics() -> None:
    services = interpolate(load_compose(), {})["services"]
    assert set(services) == {"redis", "worker", "beat", "flower", "metrics"}
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["command"][:4] == ["celery", "-A", "abstractruntime_celery", "worker"]
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "abstractruntime-celery", "health"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "abstractruntime_celery", "beat"]
    assert services["metrics"]["command"][:5] == ["abstractruntime-celery", "metrics", "serve", "--port", "9808"]
    assert "flower" in services["flower"]["command"]
    ours = ("worker", "beat", "metrics")
    envs = [services[name]["environment"] for name in ours]
    assert all(env == envs[0] for env in envs), "every service of ours reads the same settings"
    assert envs[0]["ABSTRACTRUNTIME_CELERY_BROKER_URL"] == "redis://redis:6379/0"
    assert envs[0]["ABSTRACTRUNTIME_CELERY_STORE_URL"] == "redis://redis:6379/1"
    flower_broker = next(a for a in services["flower"]["command"] if a.startswith("--broker="))
    assert flower_broker == f"--broker={envs[0]['ABSTRACTRUNTIME_CELERY_BROKER_URL']}"


def test_k8s_manifests_hold_workers_one_beat_probes_and_a_budget() -> None:
    docs = load_k8s()
    kustomization = (DEPLOY / "k8s" / "kustomization.yaml").read_text()
    listed = set(yaml.safe_load(kustomization)["resources"])
    assert listed == {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    config = k8s_object(docs, "ConfigMap", "abstractruntime-celery")
    worker = k8s_object(docs, "Deployment", "abstractruntime-worker")
    beat = k8s_object(docs, "Deployment", "abstractruntime-beat")
    budget = k8s_object(docs, "PodDisruptionBudget", "abstractruntime-worker")
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    for deployment in (worker, beat, k8s_object(docs, "Deployment", "abstractruntime-metrics")):
        template = deployment["spec"]["template"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        for container in template["spec"]["containers"]:
            refs = [e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e]
            assert refs == [config["metadata"]["name"]]
    assert budget["spec"]["selector"]["matchLabels"] == worker["spec"]["selector"]["matchLabels"]
    worker_container = worker["spec"]["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        assert worker_container[probe]["exec"]["command"] == ["abstractruntime-celery", "health"]
    assert beat["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["exec"]["command"] == \
        ["abstractruntime-celery", "health"]
    assert set(config["data"]) >= {"ABSTRACTRUNTIME_CELERY_BROKER_URL", "ABSTRACTRUNTIME_CELERY_STORE_URL",
                                   "ABSTRACTRUNTIME_CELERY_KEY_PREFIX", "ABSTRACTRUNTIME_CELERY_QUEUE"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_k8s_kustomization_builds() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\nkind: ") + out.stdout.startswith("kind: ") >= 6


def test_systemd_units_agree_with_the_env_file_users_and_state_directory() -> None:
    env = parse_env_file(ENV_FILE)
    units = {p.name: parse_unit(p) for p in SYSTEMD.glob("*.service")}
    assert set(units) == {WORKER_UNIT.name, BEAT_UNIT.name, "abstractruntime-metrics.service"}
    sysusers = (SYSTEMD / "sysusers.d" / "abstractruntime-celery.conf").read_text().split("\n")
    users = {line.split()[1] for line in sysusers if line.startswith("u ")}
    for name, unit in units.items():
        service = unit["Service"]
        assert service["User"] == ["abstractruntime"] and set(service["User"]) <= users, name
        assert service["EnvironmentFile"] == [f"/etc/{ENV_FILE.name}"], name
        assert service["Restart"] == ["always"], name
        # Every variable a command line reads is in the env file (systemd would pass "" otherwise).
        systemd_argv(service["ExecStart"][0], env, {"i": "1", "H": "host", "S": "/var/lib"})
    worker = units[WORKER_UNIT.name]["Service"]
    assert worker["ExecStart"][0].endswith("-n %i@%H") and worker["KillMode"] == ["mixed"]
    beat = units[BEAT_UNIT.name]["Service"]
    assert beat["StateDirectory"] == ["abstractruntime"]
    assert "--schedule=%S/abstractruntime/celerybeat-schedule" in beat["ExecStart"][0]
    tmpfiles = (SYSTEMD / "tmpfiles.d" / "abstractruntime-celery.conf").read_text()
    assert "d /var/lib/abstractruntime 0750 abstractruntime abstractruntime -" in tmpfiles


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    """systemd's own parser: any unknown key or bad value is reported. The programs are
    not installed here, so their one complaint each ("is not executable") is expected."""
    for unit in SYSTEMD.glob("*.service"):
        target = tmp_path / unit.name.replace("@.", "@1.")
        shutil.copy(unit, target)
        out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(target)],
                             capture_output=True, text=True, timeout=60)
        lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
        unexpected = [ln for ln in lines if "/srv/abstractruntime/.venv/bin/" not in ln
                      or "is not executable" not in ln]
        assert not unexpected, "\n".join(lines)


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None
                    or os.geteuid() != 0, reason="needs systemd-sysusers, systemd-tmpfiles and root (chown)")
def test_sysusers_and_tmpfiles_make_the_user_and_state_directory(tmp_path: Path) -> None:
    """The real tools, in a scratch root: the user every unit names, and beat's directory."""
    for kind in ("sysusers.d", "tmpfiles.d"):
        (tmp_path / "etc" / kind).mkdir(parents=True)
        shutil.copy(SYSTEMD / kind / "abstractruntime-celery.conf", tmp_path / "etc" / kind)
    (tmp_path / "etc" / ENV_FILE.name).write_text(ENV_FILE.read_text())
    for tool in (["systemd-sysusers"], ["systemd-tmpfiles", "--create"]):
        out = subprocess.run([*tool, f"--root={tmp_path}"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    passwd = dict((ln.split(":")[0], ln.split(":")) for ln in (tmp_path / "etc/passwd").read_text().splitlines())
    uid, gid = int(passwd["abstractruntime"][2]), int(passwd["abstractruntime"][3])
    state = (tmp_path / "var/lib/abstractruntime").stat()
    assert (state.st_uid, state.st_gid, state.st_mode & 0o777) == (uid, gid, 0o750)
    env_stat = (tmp_path / "etc" / ENV_FILE.name).stat()
    assert (env_stat.st_gid, env_stat.st_mode & 0o777) == (gid, 0o640)


DOCKER_INSTRUCTIONS = {"FROM", "ENV", "WORKDIR", "COPY", "RUN", "USER", "ARG", "LABEL", "EXPOSE", "ENTRYPOINT",
                       "CMD", "VOLUME", "HEALTHCHECK", "SHELL", "STOPSIGNAL", "ADD", "ONBUILD"}


def test_every_file_of_the_kit_is_one_these_tests_read() -> None:
    """A file added to deploy/ without a test reading it fails here."""
    read = {"compose.yaml", "Dockerfile", "README.md", "app/README.md", "k8s/kustomization.yaml",
            "grafana-dashboard.json",
            *(f"k8s/{p.name}" for p in (DEPLOY / "k8s").glob("*.yaml")),
            *(f"systemd/{p.name}" for p in SYSTEMD.glob("*.service")), f"systemd/{ENV_FILE.name}",
            "systemd/sysusers.d/abstractruntime-celery.conf", "systemd/tmpfiles.d/abstractruntime-celery.conf"}
    present = {str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*") if p.is_file()}
    assert present == read


def test_grafana_dashboard_plots_only_our_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", []) if "expr" in t]
    assert dashboard["title"] and exprs
    assert all("abstractruntime_celery_" in e for e in exprs), [e for e in exprs if "abstractruntime_celery_" not in e]


def test_dockerfile_instructions_and_its_user_match_the_manifests() -> None:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert {ln.split()[0] for ln in lines} <= DOCKER_INSTRUCTIONS, lines
    assert lines[0].startswith("FROM ") and any(ln == "USER abstractruntime" for ln in lines)
    uid = int(re.search(r"useradd [^&]*--uid (\d+)", text).group(1))
    for deployment in (d for d in load_k8s() if d["kind"] == "Deployment"):
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid
    assert '".[metrics]"' in text  # the metrics service runs in this image


# --- the command lines, run -----------------------------------------------------------------

def _kit_env(prefix: str) -> dict[str, str]:
    """What the test changes: where Redis is (host, port, database), the prefix and queue."""
    return {"ABSTRACTRUNTIME_CELERY_BROKER_URL": BROKER_URL, "ABSTRACTRUNTIME_CELERY_STORE_URL": STORE_URL,
            "ABSTRACTRUNTIME_CELERY_KEY_PREFIX": prefix, "ABSTRACTRUNTIME_CELERY_QUEUE": f"{prefix}q"}


def _systemd_lines(tmp: Path, test_env: dict[str, str]) -> tuple[list[str], list[str], dict[str, str]]:
    env = {**parse_env_file(ENV_FILE), **test_env}
    spec = {"i": "w1", "H": socket.gethostname(), "S": str(tmp)}
    (tmp / "abstractruntime").mkdir()  # StateDirectory= / tmpfiles.d make it on a host
    worker = systemd_argv(parse_unit(WORKER_UNIT)["Service"]["ExecStart"][0], env, spec)
    beat = systemd_argv(parse_unit(BEAT_UNIT)["Service"]["ExecStart"][0], env, spec)
    return worker, beat, env


def _compose_lines(tmp: Path, test_env: dict[str, str]) -> tuple[list[str], list[str], dict[str, str]]:
    services = interpolate(load_compose(), test_env)["services"]
    env = {k: str(v) for k, v in services["worker"]["environment"].items()}
    assert services["beat"]["environment"] == services["worker"]["environment"]
    return services["worker"]["command"], services["beat"]["command"], env


def _k8s_lines(tmp: Path, test_env: dict[str, str]) -> tuple[list[str], list[str], dict[str, str]]:
    docs = load_k8s()
    env = {**k8s_object(docs, "ConfigMap", "abstractruntime-celery")["data"], **test_env}

    def command(name: str) -> list[str]:
        container = k8s_object(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        return [k8s_expand(w, env) for w in container["command"] + container.get("args", [])]

    return command("abstractruntime-worker"), command("abstractruntime-beat"), env


KITS = {"systemd": _systemd_lines, "compose": _compose_lines, "k8s": _k8s_lines}


def _spawn(name: str, argv: list[str], env: dict[str, str], cwd: Path) -> Proc:
    log_path = cwd / f"{name}.log"
    with open(log_path, "wb") as out:
        popen = subprocess.Popen(local_argv(argv), cwd=str(cwd), env=env, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    return Proc(name, popen, log_path)


def _process_env(kit_env: dict[str, str]) -> dict[str, str]:
    """This process's environment without its own settings, then the kit's, this tree on
    the path, and a 1 s sweep interval (so one sweep comes quickly)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTRUNTIME_CELERY_")}
    env.pop("CELERY_BROKER_URL", None)
    env.update(kit_env)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env["PYTHONUNBUFFERED"] = "1"
    env["ABSTRACTRUNTIME_CELERY_SWEEP_INTERVAL_S"] = "1"
    return env


@pytest.fixture
def procs(request: pytest.FixtureRequest) -> Iterator[list[Proc]]:
    started: list[Proc] = []
    failed_before = request.session.testsfailed
    yield started
    for proc in reversed(started):
        proc.stop()
    if request.session.testsfailed > failed_before:
        for proc in started:
            print(f"===== {proc.name} =====\n{proc.log()[-6000:]}")


def _drive_demo(env: dict[str, str]) -> Any:
    """Start the demo workflow through the broker, as a web app would, answer its approval
    wait, and return the final state (its timer, event and child all went through workers)."""
    from abstractruntime_celery import create_scheduled_runtime, install, load_settings
    from abstractruntime_celery.app import make_app
    from abstractruntime_celery.demo import APPROVAL_KEY, registry

    settings = load_settings(env=env)
    app = make_app(env["ABSTRACTRUNTIME_CELERY_BROKER_URL"], name=f"arc-{settings.queue}", config_module=None)
    install(app, registry=registry, settings=settings)
    sr = create_scheduled_runtime(app=app, settings=settings, registry=registry, auto_start=False)
    try:
        run_id, state = sr.run(registry.get("demo"), vars={"nap_s": 0.2}, timeout=TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        answered = False
        while state.status.value not in ("completed", "failed", "cancelled") and time.monotonic() < deadline:
            waiting = state.waiting
            if not answered and waiting is not None and (waiting.wait_key or "").startswith(APPROVAL_KEY):
                state = sr.respond(run_id, {"by": "the deploy test"}, timeout=TIMEOUT)
                answered = True
                continue
            time.sleep(0.05)
            state = sr.get_state(run_id)
        wait_for(lambda: sr.stats.sweeps >= 1, TIMEOUT, "beat's sweep to run on the worker")
        return state
    finally:
        sr.stop()


def _celery_parse(argv: list[str], app: Any) -> tuple[str, dict[str, Any]]:
    """Parse a ``celery`` command line with Celery's own CLI, without starting anything.

    Raises:
        click.ClickException: an unknown command or option, or a bad value.
    """
    from celery.bin.base import CLIContext
    from celery.bin.celery import celery as celery_cli

    ctx = celery_cli.make_context("celery", list(argv[1:]), obj=CLIContext(app=app, no_color=True, workdir=None,
                                                                         quiet=True))
    rest = list(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])) + list(ctx.args)
    name, command, args = celery_cli.resolve_command(ctx, rest)
    assert name is not None and command is not None
    return name, command.make_context(name, args, parent=ctx).params


@pytest.mark.parametrize("kit", sorted(KITS))
def test_every_kits_worker_and_beat_lines_parse_with_celerys_cli(kit: str, tmp_path: Path) -> None:
    """Celery's own parser takes each line (a bad option or value fails here), and the
    worker consumes the queue of the kit's settings."""
    from abstractruntime_celery.app import make_app

    worker_argv, beat_argv, env = KITS[kit](tmp_path, _kit_env("tdeploy:"))
    assert worker_argv[1:3] == beat_argv[1:3] == ["-A", "abstractruntime_celery"]
    app = make_app(env["ABSTRACTRUNTIME_CELERY_BROKER_URL"], name=f"parse-{kit}", config_module=None)
    name, params = _celery_parse(worker_argv, app)
    assert name == "worker" and params["queues"] == ["tdeploy:q"]
    assert params["hostname"] and "%" not in params["hostname"]
    name, params = _celery_parse(beat_argv, app)
    assert name == "beat" and params["schedule"].endswith("celerybeat-schedule")


#: The kits whose worker and beat lines really run (one pair by default, to keep the suite
#: short); CI can run all three: ARC_TEST_DEPLOY_KITS=systemd,compose,k8s.
RUN_KITS = [k for k in os.environ.get("ARC_TEST_DEPLOY_KITS", "systemd").split(",") if k]


@pytest.mark.parametrize("kit", RUN_KITS)
def test_the_kits_worker_and_beat_lines_complete_a_run(kit: str, prefix: str, tmp_path: Path,
                                                       procs: list[Proc]) -> None:
    worker_argv, beat_argv, kit_env = KITS[kit](tmp_path, _kit_env(prefix))
    env = _process_env(kit_env)
    try:
        worker = _spawn("worker", worker_argv, env, tmp_path)
        procs.append(worker)
        procs.append(_spawn("beat", beat_argv, env, tmp_path))
        wait_for(lambda: " ready." in worker.log() or not worker.alive(), TIMEOUT, f"the {kit} worker to be ready")
        assert worker.alive(), worker.log()
        state = _drive_demo(env)
        assert state.status.value == "completed", (state.status, state.error)
        assert state.output == {"approved_by": "the deploy test", "child_sum": 55}
        assert all(p.alive() for p in procs), "a process of the kit exited"
    finally:
        for proc in reversed(procs):
            proc.stop()
        cleanup_broker(BROKER_URL, f"{prefix}q")


# --- the operator commands the kit names (health, metrics) ----------------------------------

def _has_command(*path: str) -> bool:
    from abstractruntime_celery.cli import main

    group: Any = main
    for name in path:
        commands = getattr(group, "commands", {})
        if name not in commands:
            return False
        group = commands[name]
    return True


def test_the_health_probe_line_passes_after_a_sweep_and_fails_without_a_broker(
        prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers' readiness probe, as written, in the ConfigMap's environment: healthy once
    a sweep has run (``abstractruntime-celery sweep``, in this process, stands in for beat),
    unhealthy (exit 1) when the broker's port is dead."""
    if not _has_command("health"):
        pytest.skip("abstractruntime-celery health is not in this tree")
    from abstractruntime_celery.cli import main

    docs = load_k8s()
    container = k8s_object(docs, "Deployment", "abstractruntime-worker")["spec"]["template"]["spec"]["containers"][0]
    argv = container["readinessProbe"]["exec"]["command"]
    kit_env = {**k8s_object(docs, "ConfigMap", "abstractruntime-celery")["data"], **_kit_env(prefix)}
    for name, value in kit_env.items():
        monkeypatch.setenv(name, value)
    assert main(["sweep"], standalone_mode=False) in (0, None)
    env = _process_env(kit_env)
    dead_broker = f"redis://127.0.0.1:{free_port()}/9"
    probes = [subprocess.Popen(local_argv(argv), cwd=tmp_path, env={**env, **extra}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
              for extra in ({}, {"ABSTRACTRUNTIME_CELERY_BROKER_URL": dead_broker})]
    (healthy_out, healthy), (unhealthy_out, unhealthy) = [(p.communicate(timeout=90)[0], p.returncode)
                                                          for p in probes]
    assert healthy == 0, healthy_out
    assert unhealthy == 1 and "broker" in unhealthy_out, unhealthy_out


def test_the_metrics_line_serves_prometheus_text(prefix: str, tmp_path: Path, procs: list[Proc]) -> None:
    if not _has_command("metrics", "serve"):
        pytest.skip("abstractruntime-celery metrics serve is not in this tree")
    services = interpolate(load_compose(), _kit_env(prefix))["services"]
    argv = list(services["metrics"]["command"])
    port = free_port()
    argv[argv.index("--port") + 1] = str(port)  # only the port and the address change
    argv[argv.index("--addr") + 1] = "127.0.0.1"
    env = _process_env({k: str(v) for k, v in services["metrics"]["environment"].items()})
    proc = _spawn("metrics", argv, env, tmp_path)
    procs.append(proc)

    def scrape() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                return resp.read().decode() if resp.status == 200 else ""
        except OSError:
            assert proc.alive(), proc.log()
            return ""

    text = wait_for(scrape, TIMEOUT, "the metrics endpoint")
    assert "# TYPE" in text


# --- one store story, everywhere -------------------------------------------------------------

def _db(url: str) -> int:
    return int(url.rsplit("/", 1)[1])


def test_config_docs_and_kit_tell_one_store_story(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    """The library's default store is memory:// (embedded only: a worker refuses it at
    start); every config we ship puts the broker in database 0 and runs in database 1."""
    import runpy

    from abstractruntime_celery import ConfigError, Settings, install
    from abstractruntime_celery.app import DEFAULT_BROKER, make_app
    from abstractruntime_celery.demo import registry
    from abstractruntime_celery.tasks import driver_for

    for name in ("ABSTRACTRUNTIME_CELERY_STORE_URL", "ABSTRACTRUNTIME_CELERY_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    celeryconfig = runpy.run_path(str(ROOT / "celeryconfig.py"))
    readme = (ROOT / "README.md").read_text()
    compose_env = interpolate(load_compose(), {})["services"]["worker"]["environment"]
    k8s_env = k8s_object(load_k8s(), "ConfigMap", "abstractruntime-celery")["data"]
    unit_env = parse_env_file(ENV_FILE)
    pairs = {  # where: (broker URL, store URL)
        "celeryconfig.py": (celeryconfig["broker_url"], celeryconfig["abstractruntime_store_url"]),
        "README fleet example": tuple(re.search(rf"export ABSTRACTRUNTIME_CELERY_{k}_URL=(\S+)", readme).group(1)
                                      for k in ("BROKER", "STORE")),
        "compose": (compose_env["ABSTRACTRUNTIME_CELERY_BROKER_URL"], compose_env["ABSTRACTRUNTIME_CELERY_STORE_URL"]),
        "k8s": (k8s_env["ABSTRACTRUNTIME_CELERY_BROKER_URL"], k8s_env["ABSTRACTRUNTIME_CELERY_STORE_URL"]),
        "systemd": (unit_env["ABSTRACTRUNTIME_CELERY_BROKER_URL"], unit_env["ABSTRACTRUNTIME_CELERY_STORE_URL"]),
    }
    for where, (broker, store) in pairs.items():
        assert (_db(broker), _db(store)) == (0, 1), where
        assert broker.rsplit("/", 1)[0] == store.rsplit("/", 1)[0], f"{where}: one Redis for both"
    assert celeryconfig["broker_url"] == DEFAULT_BROKER
    table = {row.split("|")[1].strip(): row.split("|")[3].strip() for row in readme.splitlines()
             if row.startswith("| ") and row.count("|") >= 5}
    assert table["`store_url`"] == f"`{Settings().store_url}`"
    assert table["broker URL"] == f"`{DEFAULT_BROKER}`"
    keys_doc = (ROOT / "docs" / "redis-keys.md").read_text()
    assert set(re.findall(r"redis-cli -n (\d+)", keys_doc)) == {"1"}
    # And the default really is refused by a worker's driver, naming what to set.
    app = make_app(BROKER_URL, name=f"arc-{prefix}", config_module=None)
    install(app, registry=registry, settings=Settings(key_prefix=prefix, queue=f"{prefix}q"))
    with pytest.raises(ConfigError, match="store_url"):
        driver_for(app)
