"""A worker on a host that is cut off from Redis in the middle of a slow tick.

The worker runs in its own network namespace, joined to this host by a veth pair
(10.213.x.0/30, inside namespaces this test creates), and talks to a private
redis-server bound on the host end of the veth. The namespace's link goes down
while its tick sleeps in a node: its lease expires, a worker on the host takes the
run over (beat's sweep finds the orphan) and completes it. When the link comes
back, the cut-off worker finishes its node and tries to commit: the fence refuses
(``lease_lost``), the node after it ran once, and the final state is the new owner's.

Needs root and ``ip netns``; skips otherwise. Namespaces and veths are always removed.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from devkit.redisproc import PrivateRedis
from devkit.procs import Cluster, Proc, settings_env, wait_for
from tests.conftest import make_settings
from soak.workflows import registry

pytestmark = pytest.mark.timeout(180)
TIMEOUT = 60.0


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def netns() -> Iterator[dict[str, str]]:
    """A namespace with a veth to the host: host end 10.213.N.1, namespace end 10.213.N.2."""
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns")
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"arcns{tag}", f"arc{tag}h", f"arc{tag}n"
    used = ip("-4", "addr", check=False).stdout
    net = next(f"10.213.{n}" for n in random.sample(range(1, 250), 249) if f"10.213.{n}." not in used)
    try:
        ip("netns", "add", ns)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"ip netns add failed: {getattr(exc, 'stderr', exc)}")
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", ns)
        ip("addr", "add", f"{net}.1/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", ns, "addr", "add", f"{net}.2/30", "dev", ns_if)
        ip("-n", ns, "link", "set", ns_if, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        yield {"ns": ns, "host_if": host_if, "ns_if": ns_if, "host_ip": f"{net}.1", "ns_ip": f"{net}.2"}
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"could not set up the veth pair: {exc.stderr}")
    finally:
        ip("netns", "del", ns, check=False)          # takes the namespace end (and so the pair) with it
        ip("link", "del", host_if, check=False)      # in case the pair outlived it


def spawn_in_ns(cluster: Cluster, ns: str, name: str, env: dict[str, str]) -> Proc:
    """``celery worker`` inside the namespace (own process group, log under tmp)."""
    log_path = cluster.tmp / f"ns-{name}.log"
    node = f"{name}.{cluster.settings.key_prefix.strip(':')}@%h"
    with open(log_path, "wb") as out:
        popen = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "celery", "-A", "abstractruntime_celery", "worker",
             "-P", "prefork", "-c", "1", "-n", node, "-l", "INFO", "--without-mingle", "--without-gossip",
             "--without-heartbeat", "-Q", cluster.settings.queue],
            cwd=str(cluster.tmp), env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    proc = Proc(name, popen, log_path)
    cluster.procs.append(proc)
    wait_for(lambda: " ready." in proc.log() or not proc.alive(), TIMEOUT, f"worker {name} in {ns}", cluster)
    assert proc.alive(), proc.log()
    return proc


def fx_count(fx_url: str, fx_key: str, run_id: str, name: str) -> int:
    """How many times node step ``name`` of the run ran (soak.workflows logs every execution)."""
    return int(redis.Redis.from_url(fx_url).llen(f"{fx_key}fxlog:{run_id}:{name}"))


def test_cut_off_worker_cannot_commit_after_its_lease_moved(netns: dict[str, str], tmp_path: Path,
                                                            request: pytest.FixtureRequest) -> None:
    # One private Redis, bound on the host end of the veth (the namespace's only way out) and
    # on loopback (so host-side clients never depend on the veth's state).
    server = PrivateRedis(tmp_path / "redis", host=netns["host_ip"], aof=False,
                          extra=["--bind", netns["host_ip"], "127.0.0.1"])
    server.start()
    reach = subprocess.run(["ip", "netns", "exec", netns["ns"], sys.executable, "-c",
                            f"import redis; redis.Redis(host={netns['host_ip']!r}, port={server.port}, "
                            f"socket_connect_timeout=3).ping()"], capture_output=True, text=True)
    if reach.returncode != 0:
        server.stop()
        pytest.skip(f"the veth does not carry traffic here: {reach.stderr[-300:]}")
    host_url = f"redis://127.0.0.1:{server.port}"
    ns_url = f"redis://{netns['host_ip']}:{server.port}"
    prefix = f"ns{uuid.uuid4().hex[:6]}:"
    settings = make_settings(prefix, store_url=f"{host_url}/1", lease_ttl_s=3.0, orphan_grace_s=2.0,
                             registry="soak.workflows:registry")
    cluster = Cluster(settings, f"{host_url}/0", f"{host_url}/2", tmp_path)
    failed_before = request.session.testsfailed
    fx_key, fx_url = f"{prefix}fx:", f"{host_url}/2"
    try:
        # The worker in the namespace sees Redis only through the veth.
        from dataclasses import replace

        ns_env = settings_env(replace(settings, store_url=f"{ns_url}/1"), f"{ns_url}/0", f"{ns_url}/2")
        cut_off = spawn_in_ns(cluster, netns["ns"], "cutoff", ns_env)
        cluster.beat()

        from abstractruntime_celery.app import make_app
        from abstractruntime_celery.tasks import install

        app = make_app(f"{host_url}/0", name=f"ns-{prefix}", config_module=None)
        install(app, registry=registry, settings=settings)
        sr = create_scheduled_runtime(app=app, settings=settings, registry=registry, auto_start=False)

        run_id, _ = sr.run(registry.get("soak-slow"), vars={"sleep": 6, "fx": fx_key}, wait=False)
        wait_for(lambda: fx_count(fx_url, fx_key, run_id, "work_started") == 1, TIMEOUT,
                 "the slow node to start in the namespace", cluster)
        assert "ns-cutoff" in str(cut_off.log_path)
        # Cut the namespace's link at the host end of the veth: its packets are dropped (not
        # refused), as when a cable or a switch dies; the namespace keeps its address and route.
        ip("link", "set", netns["host_if"], "down")
        try:
            cluster.worker("host")  # a worker on the host takes over once the lease expired
            done = sr.wait_for(run_id, timeout=TIMEOUT, until=lambda r: r.status == RunStatus.COMPLETED)
            assert fx_count(fx_url, fx_key, run_id, "work_started") == 2
            assert fx_count(fx_url, fx_key, run_id, "finish") == 1
            lost_before = sr.stats.lease_lost
        finally:
            ip("link", "set", netns["host_if"], "up")  # the link comes back
        # The cut-off tick wakes up, finishes its node (work_done 2) and tries to commit.
        wait_for(lambda: fx_count(fx_url, fx_key, run_id, "work_done") == 2, 2 * TIMEOUT,
                 "the cut-off tick to finish its node", cluster)
        wait_for(lambda: sr.stats.lease_lost > lost_before, TIMEOUT, "the stale commit to be refused", cluster)
        after = sr.get_state(run_id)
        assert after.status == RunStatus.COMPLETED and after.updated_at == done.updated_at
        assert after.output == {"ok": True}
        assert fx_count(fx_url, fx_key, run_id, "finish") == 1
        completed: dict[tuple[str, str], int] = {}
        for rec in sr.get_ledger(run_id):
            if str(rec.get("status", "")).lower().endswith("completed"):
                step = (str(rec.get("node_id")), str(rec.get("idempotency_key") or rec.get("step_id")))
                completed[step] = completed.get(step, 0) + 1
        assert completed and all(n == 1 for n in completed.values()), completed
        assert "lease lost" in cut_off.log(), cut_off.log()[-3000:]  # it was the cut-off one that was refused
        assert cut_off.alive()  # it lost a lease, not its mind
        sr.stop()
    finally:
        cluster.stop_all()
        if request.session.testsfailed > failed_before:
            cluster.dump_logs()
        server.stop()



