"""Real ``celery worker`` / ``celery beat`` subprocesses for the end-to-end tests and the soak.

Each process runs in its own session (its own process group), so a test can
SIGKILL a whole worker (main process and prefork children) at once, and teardown
never leaves a pool child behind. Settings reach the subprocesses only through
``ABSTRACTRUNTIME_CELERY_*`` environment variables, built from the same
``Settings`` object the test process uses, so both sides agree by construction.
Logs go to files under the test's tmp dir and are dumped when a test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

import redis

from .cleanup import cleanup_broker, delete_prefix

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "tests.workflows:registry"


def settings_env(settings: Any, broker_url: str, fx_url: str) -> dict[str, str]:
    """The environment that makes ``celery -A abstractruntime_celery`` load ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTRACTRUNTIME_CELERY_")}
    for f in fields(settings):
        env[f"ABSTRACTRUNTIME_CELERY_{f.name.upper()}"] = str(getattr(settings, f.name))
    env["ABSTRACTRUNTIME_CELERY_REGISTRY"] = settings.registry or REGISTRY
    env["ABSTRACTRUNTIME_CELERY_BROKER_URL"] = broker_url
    env["ARC_TEST_FX_URL"] = fx_url
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("CELERY_BROKER_URL", None)
    return env


@dataclass
class Proc:
    """One celery subprocess (the leader of its own process group)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (the worker and its pool children)."""
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the group, then SIGKILL whatever is left after ``grace_s``."""
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        self.kill(signal.SIGKILL)  # pool children may outlive a leader that already exited
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass


@dataclass
class Cluster:
    """Celery subprocesses sharing one Settings (one key prefix, one queue)."""

    settings: Any
    broker_url: str
    fx_url: str
    tmp: Path
    procs: list[Proc] = field(default_factory=list)
    _count: int = 0
    #: More environment for the processes started from now on (a setting Settings refuses).
    env_extra: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**settings_env(self.settings, self.broker_url, self.fx_url), **self.env_extra}

    def _spawn(self, name: str, args: list[str]) -> Proc:
        self._count += 1
        log_path = self.tmp / f"{self._count:02d}-{name}.log"
        out = open(log_path, "wb")
        try:
            popen = subprocess.Popen([sys.executable, "-m", "celery", "-A", "abstractruntime_celery", *args],
                                     cwd=str(self.tmp), env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            out.close()
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def worker(self, name: str = "w", *, concurrency: int = 2, ready_timeout: float = 60.0,
               pass_queue: bool = True, extra: list[str] | None = None) -> Proc:
        """Start ``celery worker`` (prefork) and wait until it is ready. With ``pass_queue``
        it gets ``-Q <queue>``; without, it must find the queue from the environment alone."""
        node = f"{name}{self._count + 1}.{self.settings.key_prefix.strip(':')}@%h"
        args = ["worker", "-P", "prefork", "-c", str(concurrency), "-n", node, "-l", "INFO",
                "--without-mingle", "--without-gossip", "--without-heartbeat"]
        if pass_queue:
            args += ["-Q", self.settings.queue]
        proc = self._spawn(name, args + list(extra or []))
        wait_for(lambda: " ready." in proc.log() or not proc.alive(), ready_timeout,
                 f"worker {name} to be ready", self)
        if not proc.alive():
            raise AssertionError(f"worker {name} exited at start:\n{proc.log()}")
        return proc

    def beat(self, ready_timeout: float = 60.0) -> Proc:
        """Start ``celery beat`` with its schedule file in the tmp dir."""
        proc = self._spawn("beat", ["beat", "-s", str(self.tmp / "beat-schedule"), "-l", "DEBUG",
                                    "--pidfile", str(self.tmp / "beat.pid")])
        wait_for(lambda: "Starting" in proc.log() or not proc.alive(), ready_timeout, "beat to start", self)
        if not proc.alive():
            raise AssertionError(f"beat exited at start:\n{proc.log()}")
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def dump_logs(self, stream: Any = None, tail: int = 200) -> None:
        stream = stream or sys.__stderr__
        for proc in self.procs:
            lines = proc.log().splitlines()[-tail:]
            stream.write(f"\n===== {proc.name} (pid {proc.pid}, {proc.log_path}) last {len(lines)} lines =====\n")
            stream.write("\n".join(lines) + "\n")
        stream.flush()


def wait_for(check: Callable[[], Any], timeout: float, what: str, cluster: Cluster | None = None,
             interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            if cluster is not None:
                cluster.dump_logs()
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@contextmanager
def worker_cluster(settings: Any, tmp_path: Path, request: Any, names: Iterable[str],
                   broker_url: str, store_url: str, fx_url: str) -> Iterator[Cluster]:
    """Prefork worker subprocesses (concurrency 2 each) for one test; on the way out they
    stop, their logs print if the test failed, and their broker, store and fx keys go."""
    c = Cluster(settings, broker_url, fx_url, tmp_path)
    failed_before = request.session.testsfailed
    try:
        for name in names:
            c.worker(name, concurrency=2)
        yield c
    finally:
        c.stop_all()
        if request.session.testsfailed > failed_before:
            c.dump_logs()
        cleanup_broker(broker_url, settings.queue)
        delete_prefix(redis.Redis.from_url(store_url), settings.key_prefix)
        redis.Redis.from_url(fx_url).delete(f"{settings.key_prefix}fx")
