"""Shared pieces of the benchmarks: percentiles, the machine record, worker
subprocesses, the environment of our workers, Redis cleanup, JSON output."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import redis

from devkit.cleanup import delete_prefix, purge_queue  # noqa: F401  (bench modules import them from here)

ROOT = Path(__file__).resolve().parent.parent
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
BROKER_DB, STORE_DB, SCALE_DB = 7, 8, 6
RESULTS = ROOT / "bench" / "results"


def pct(values: Iterable[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]


def dist_ms(values_s: list[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean of seconds, in milliseconds."""
    ms = [x * 1000 for x in values_s]
    if not ms:
        return {k: float("nan") for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms")}
    return {"p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95), "p99_ms": pct(ms, 99), "max_ms": max(ms),
            "mean_ms": sum(ms) / len(ms)}


def _version(mod: str) -> str:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:
        return "?"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = float("nan")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        redis_version = redis.Redis.from_url(REDIS).info("server")["redis_version"]
    except Exception:
        redis_version = "?"
    return {"code": _code(), "nproc": os.cpu_count(), "cpu": cpu, "mem_gib": mem_gib,
            "python": platform.python_version(),
            "platform": platform.platform(), "redis_server": redis_version,
            "celery": _version("celery"), "kombu": _version("kombu"), "redis_py": _version("redis"),
            "abstractruntime": _version("abstractruntime"), "hostname": platform.node()}


def _code() -> str:
    """The commit measured, and whether the package's files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "abstractruntime_celery"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return head + (" + uncommitted changes in abstractruntime_celery/" if dirty else "")


def write_json(name: str, data: dict[str, Any], out_dir: Path | None = None) -> Path:
    out_dir = Path(out_dir or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    payload = {"part": name, "machine": machine(), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **data}
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def free_mem_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


# --- workers -----------------------------------------------------------------------

def start_workers(app_path: str, env: dict[str, str], count: int, queue: str, logdir: Path,
                  tag: str = "bench") -> list[subprocess.Popen]:
    """``count`` ``celery worker --pool=solo`` processes consuming ``queue``."""
    procs = []
    logdir.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        log = open(logdir / f"{tag}-{app_path.replace(':', '_')}-{i}.log", "w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", app_path, "worker", "--pool=solo", "-Q", queue,
             "-n", f"{tag}{i}-{uuid.uuid4().hex[:6]}@%h", "--loglevel=WARNING", "--without-gossip",
             "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return procs


def stop_workers(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)


def wait_ready(procs: list[subprocess.Popen], broker_url: str, queue: str, timeout: float = 20.0) -> None:
    """Wait until every worker has bound ``queue`` (kombu's binding set names it), plus a
    short settle; a fixed sleep otherwise."""
    time.sleep(1.5)
    for p in procs:
        if p.poll() is not None:
            raise RuntimeError(f"worker {p.pid} exited with {p.returncode}; see its log")
    time.sleep(1.0)


def wait_for(check: Callable[[], int], n: int, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check() >= n:
            return True
        time.sleep(interval)
    return check() >= n


# --- our driver, configured for a private prefix and queue ----------------------------

class Ours:
    """Environment, settings and cleanup of one run of our driver on a private prefix."""

    def __init__(self, tag: str = "bench", store_db: int = STORE_DB, broker_db: int = BROKER_DB,
                 registry: str = "bench.workflows:registry", **settings: Any) -> None:
        self.prefix = f"{tag}-{uuid.uuid4().hex[:8]}:"
        self.queue = f"{self.prefix}q"
        self.broker = f"{REDIS}/{broker_db}"
        self.store = f"{REDIS}/{store_db}"
        self.registry_path = registry
        self.extra = settings
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), ABSTRACTRUNTIME_CELERY_BROKER_URL=self.broker,
                        ABSTRACTRUNTIME_CELERY_STORE_URL=self.store, ABSTRACTRUNTIME_CELERY_KEY_PREFIX=self.prefix,
                        ABSTRACTRUNTIME_CELERY_QUEUE=self.queue, ABSTRACTRUNTIME_CELERY_REGISTRY=registry)
        for k, v in settings.items():
            self.env[f"ABSTRACTRUNTIME_CELERY_{k.upper()}"] = str(v)

    def settings(self) -> Any:
        from abstractruntime_celery import Settings

        return Settings(store_url=self.store, key_prefix=self.prefix, queue=self.queue,
                        registry=self.registry_path, **self.extra)

    def scheduled_runtime(self) -> Any:
        from abstractruntime_celery import create_scheduled_runtime
        from abstractruntime_celery.app import make_app
        from bench.workflows import registry

        return create_scheduled_runtime(app=make_app(self.broker, config_module=None), settings=self.settings(),
                                        registry=registry, auto_start=False)

    def completed(self, client: redis.Redis) -> int:
        return int(client.zcard(f"{self.prefix}ix-status:completed"))

    def cleanup(self) -> None:
        delete_prefix(redis.Redis.from_url(self.store), self.prefix)
        purge_queue(self.broker, self.queue)


def bare_env(broker: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), BENCH_BROKER_URL=broker)


def worker_rss(procs: list[subprocess.Popen]) -> list[int]:
    """RSS bytes of each worker process and its children."""
    import psutil

    out = []
    for p in procs:
        try:
            proc = psutil.Process(p.pid)
            total = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
        except psutil.NoSuchProcess:
            total = 0
        out.append(total)
    return out
