"""Webhooks: signed HTTP requests to real servers (``webhooks serve`` under uvicorn for ASGI;
Flask and Django on werkzeug's threaded WSGI servers in another process; both started once
for the module) turn into events that a real Celery worker applies, on real Redis. The same matrix runs against every adapter:
signatures, rotation, replays, duplicates (one at a time and all at once), size limits,
refusals; then the atomic write of the dedupe mark and the event, under a script error
and a connection cut mid-way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis
from abstractruntime import RunStatus

from abstractruntime_celery import scripts
from abstractruntime_celery.driver import build
from abstractruntime_celery.webhooks import (
    HookRequest,
    Webhooks,
    derived_run_id,
    signed_headers,
    start_route,
)
from devkit.cleanup import cleanup_broker, delete_prefix
from devkit.procs import ROOT, settings_env, wait_for
from devkit.redisproc import free_port
from tests.conftest import BROKER_URL, FX_URL, STORE_URL, make_app, make_settings
from tests.webhook_routes import LEGACY_SECRET, table_key

OLD = "whsec_" + base64.b64encode(b"old-secret-0123456789abcdef").decode()
NEW = "whsec_" + base64.b64encode(b"new-secret-fedcba9876543210").decode()
RETIRED = "whsec_" + base64.b64encode(b"retired-secret-000000000000").decode()
MAX_BODY = 4096
ADAPTERS = ["asgi", "flask", "django"]
#: One client (and its connections) for the sequential requests of the module.
CLIENT = httpx.Client(timeout=30)


@dataclass
class Env:
    """What the module's tests share: settings, the in-process worker's app and driver, the
    servers' URLs by adapter, and a client on the store's Redis."""

    settings: Any
    app: Any
    driver: Any
    urls: dict[str, str]
    store: redis.Redis
    #: ``webhooks serve`` started with a malformed secret, and its log.
    bad_serve: subprocess.Popen[bytes]
    bad_log: Path

    def mark(self, route: str, webhook_id: str) -> bool:
        return bool(self.store.exists(self.driver.coord.keys.hook_seen(route, webhook_id)))

    def inbox(self, run_id: str) -> int:
        return int(self.store.hlen(self.driver.coord.keys.inbox(run_id)))


def _spawn(args: list[str], environ: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", *args], cwd=str(ROOT), env=environ, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/hooks/runs/x/y", timeout=1).status_code == 405
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def env(redis_up: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One prefix, one in-process worker and the three servers, for the whole module."""
    from celery.contrib.testing.worker import start_worker

    from abstractruntime_celery.tasks import driver_for

    prefix = f"t{uuid.uuid4().hex[:10]}:"
    settings = make_settings(prefix, webhook_secrets=f"{OLD} {NEW}", webhook_max_body_bytes=MAX_BODY,
                             webhook_routes="tests.webhook_routes:routes")
    app = make_app(settings)
    tmp = tmp_path_factory.mktemp("webhooks")
    ports = {kind: free_port() for kind in ADAPTERS}
    urls = {kind: f"http://127.0.0.1:{port}" for kind, port in ports.items()}
    environ = settings_env(settings, BROKER_URL, FX_URL)
    # Started together: the receiver under uvicorn, Flask and Django (one WSGI process), and
    # `webhooks serve` with a malformed secret, which must refuse to start.
    procs = {
        "asgi": (tmp / "asgi.log", ["abstractruntime_celery", "webhooks", "serve", "--port", str(ports["asgi"]),
                                    "--log-level", "warning"], environ),
        "wsgi": (tmp / "wsgi.log", ["tests._webhook_servers", f"flask:{ports['flask']}",
                                    f"django:{ports['django']}"], environ),
        "bad": (tmp / "bad.log", ["abstractruntime_celery", "webhooks", "serve", "--port", str(free_port())],
                {**environ, "ABSTRACTRUNTIME_CELERY_WEBHOOK_SECRETS": "whsec_!"}),
    }
    popens: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, (log_path, args, penv) in procs.items():
            popens[name] = _spawn(args, penv, log_path)
        with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False, queues=[settings.queue],
                          shutdown_timeout=10, loglevel="WARNING"):
            for kind, url in urls.items():
                name = "asgi" if kind == "asgi" else "wsgi"
                popen, log_path = popens[name], procs[name][0]
                try:
                    wait_for(lambda: _answers(url) or popen.poll() is not None, 60, f"the {kind} server")
                except AssertionError:
                    raise AssertionError(f"{kind} server did not answer:\n{log_path.read_text()}") from None
                assert popen.poll() is None, f"{kind} server exited:\n{log_path.read_text()}"
            yield Env(settings, app, driver_for(app), urls, redis.Redis.from_url(STORE_URL, decode_responses=True),
                      popens["bad"], procs["bad"][0])
    finally:
        for popen in popens.values():
            popen.terminate()
        for popen in popens.values():
            try:
                popen.wait(10)
            except subprocess.TimeoutExpired:
                popen.kill()
        cleanup_broker(BROKER_URL, settings.queue)
        delete_prefix(redis.Redis.from_url(STORE_URL), prefix)
        delete_prefix(redis.Redis.from_url(BROKER_URL), prefix)
        delete_prefix(redis.Redis.from_url(FX_URL), prefix)


def post(env: Env, adapter: str, path: str, payload: Any = None, *, webhook_id: Optional[str] = None,
         secrets: Any = OLD, timestamp: Optional[int] = None, raw: Optional[bytes] = None,
         headers: Optional[dict[str, str]] = None, signed_body: Optional[bytes] = None) -> httpx.Response:
    """POST a delivery signed as a Standard Webhooks sender does (a fresh signature each time)."""
    body = raw if raw is not None else json.dumps(payload).encode()
    wid = webhook_id or f"msg_{uuid.uuid4().hex}"
    sent = signed_headers(secrets, wid, signed_body if signed_body is not None else body, timestamp) \
        if secrets is not None else {}
    sent = {**sent, "content-type": "application/json", **(headers or {})}
    return CLIENT.post(env.urls[adapter] + path, content=body, headers=sent)


def tagged(name: str) -> str:
    """A webhook id no other test (or adapter) uses: marks outlive the run they were for."""
    return f"msg_{name}_{uuid.uuid4().hex[:8]}"


def waiting_run(env: Env, workflow: str, **vars: Any) -> str:
    run_id = env.driver.start_run(workflow, vars=vars)
    env.driver.wait_for(run_id, timeout=20, until=lambda r: r.status == RunStatus.WAITING)
    return run_id


def until(env: Env, run_id: str, check: Callable[[Any], bool]) -> Any:
    return env.driver.wait_for(run_id, timeout=20, until=check)


def at_second_wait(run: Any) -> bool:
    return run.status == RunStatus.WAITING and run.vars.get("a") is not None


def storm(env: Env, adapter: str, path: str, payload: Any, webhook_id: str, n: int) -> list[httpx.Response]:
    """``n`` copies of one delivery (each signed on its own, as retries are), sent at once."""
    gate, replies = threading.Barrier(n), []

    def fire() -> None:
        body = json.dumps(payload).encode()
        headers = {**signed_headers(OLD, webhook_id, body), "content-type": "application/json"}
        with httpx.Client(timeout=30) as client:
            gate.wait()
            replies.append(client.post(env.urls[adapter] + path, content=body, headers=headers))

    threads = [threading.Thread(target=fire) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(replies) == n
    return replies


# --- the matrix, in every adapter -------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_signed_event_resumes_the_run_and_a_repeat_is_answered_but_not_stored(env: Env, adapter: str) -> None:
    run_id = waiting_run(env, "twice")
    path, first_id, second_id, third_id = f"/hooks/runs/{run_id}/k", tagged("first"), tagged("second"), tagged("third")
    first = post(env, adapter, path, {"n": 1}, webhook_id=first_id)
    assert first.status_code == 202, first.text
    assert first.json()["run_id"] == run_id and not first.json()["duplicate"]
    until(env, run_id, at_second_wait)

    again = post(env, adapter, path, {"n": 1}, webhook_id=first_id)  # the sender's retry: new signature
    assert again.status_code == 200, again.text
    assert again.json() == {"status": "duplicate", "duplicate": True, "run_id": run_id,
                            "event_id": first.json()["event_id"]}
    assert env.inbox(run_id) == 0 and env.mark("runs", first_id)

    second = post(env, adapter, path, {"n": 2}, webhook_id=second_id)
    assert second.status_code == 202, second.text
    done = until(env, run_id, lambda r: r.status == RunStatus.COMPLETED)
    assert done.output == {"a": {"n": 1}, "b": {"n": 2}}

    late = post(env, adapter, path, {"n": 1}, webhook_id=first_id)  # a repeat after the run ended
    assert (late.status_code, late.json()["duplicate"]) == (200, True)
    ended = post(env, adapter, path, {"n": 3}, webhook_id=third_id)
    assert (ended.status_code, ended.json()["error"]) == (409, "run_ended")
    assert not env.mark("runs", third_id)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_bad_signatures_and_replays_are_refused_and_store_nothing(env: Env, adapter: str) -> None:
    run_id = waiting_run(env, "event", key="paid")
    path, now = f"/hooks/runs/{run_id}/paid", int(time.time())
    cases = {
        "retired": dict(secrets=RETIRED),
        "tampered": dict(signed_body=b'{"amount": 1}'),
        "unsigned": dict(secrets=None),
        "old": dict(timestamp=now - 301),
        "ahead": dict(timestamp=now + 400),
        "fraction": dict(headers={"webhook-timestamp": f"{now}.5"}),
    }
    tag = tagged("refused")
    for name, kwargs in cases.items():
        reply = post(env, adapter, path, {"amount": 100}, webhook_id=f"{tag}_{name}", **kwargs)
        assert reply.status_code == 401, (name, reply.text)
        assert reply.json()["error"] == ("stale_timestamp" if name in ("old", "ahead") else "bad_signature"), name
        assert not env.mark("runs", f"{tag}_{name}")
    assert env.inbox(run_id) == 0
    assert env.driver.load(run_id).status == RunStatus.WAITING
    within = post(env, adapter, path, {"amount": 100}, timestamp=now - 240)  # inside the window
    assert within.status_code == 202, within.text
    assert until(env, run_id, lambda r: r.status == RunStatus.COMPLETED).output == {"event": {"amount": 100}}


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_secrets_rotate_old_and_new_both_sign_and_one_matching_entry_is_enough(env: Env, adapter: str) -> None:
    run_id = waiting_run(env, "twice")
    path = f"/hooks/runs/{run_id}/k"
    by_new = post(env, adapter, path, {"by": "new"}, secrets=[RETIRED, NEW])  # a stale entry beside the right one
    assert by_new.status_code == 202, by_new.text
    until(env, run_id, at_second_wait)
    by_old = post(env, adapter, path, {"by": "old"}, secrets=OLD)
    assert by_old.status_code == 202, by_old.text
    assert until(env, run_id, lambda r: r.status == RunStatus.COMPLETED).output == {"a": {"by": "new"},
                                                                                   "b": {"by": "old"}}


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_body_at_the_limit_is_taken_one_byte_over_is_413_and_non_objects_are_refused(env: Env, adapter: str) -> None:
    run_id = waiting_run(env, "event", key="paid")
    path = f"/hooks/runs/{run_id}/paid"
    skeleton = len(json.dumps({"pad": ""}).encode())
    at_limit = json.dumps({"pad": "x" * (MAX_BODY - skeleton)}).encode()
    assert len(at_limit) == MAX_BODY
    over_id, bad_id = tagged("over"), tagged("bad")
    over = post(env, adapter, path, raw=at_limit[:-2] + b'x"}', webhook_id=over_id)
    assert (over.status_code, over.json()["error"]) == (413, "body_too_large")
    for raw, status, code in [(b"{not json", 400, "not_json"), (b"[1, 2]", 422, "not_an_object"),
                              (b"\xff\xfe{}", 400, "not_json"), (b'{"n": NaN}', 400, "not_json"),
                              (b'{"lone": "\\ud800"}', 422, "invalid_payload")]:
        reply = post(env, adapter, path, raw=raw, webhook_id=bad_id)
        assert (reply.status_code, reply.json()["error"]) == (status, code), raw
    # Chunked (no Content-Length): read up to the limit and no further. Django under WSGI reads no
    # body without a Content-Length at all (an empty body, whose signature fails); senders send one.
    streamed = at_limit + b" "
    chunked = CLIENT.post(env.urls[adapter] + path, content=iter([streamed[:1000], streamed[1000:]]),
                          headers={**signed_headers(OLD, over_id, streamed), "content-type": "application/json"})
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == (401 if adapter == "django" else 413), chunked.text
    assert not env.mark("runs", over_id) and not env.mark("runs", bad_id) and env.inbox(run_id) == 0
    taken = post(env, adapter, path, raw=at_limit, webhook_id=tagged("at_limit"))
    assert taken.status_code == 202, taken.text
    done = until(env, run_id, lambda r: r.status == RunStatus.COMPLETED)
    assert len(done.output["event"]["pad"]) == MAX_BODY - skeleton


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_unknown_runs_wrong_keys_and_paths_are_refused(env: Env, adapter: str) -> None:
    run_id = waiting_run(env, "event", key="paid")
    cases = [(f"/hooks/runs/nosuchrun{uuid.uuid4().hex[:6]}/paid", 404, "unknown_run"),
             ("/hooks/runs/bad.id/paid", 422, "invalid_request"),
             (f"/hooks/runs/{run_id}/other", 422, "wait_key_mismatch"),
             (f"/hooks/runs/{run_id}/subworkflow:x", 409, "not_waiting"),
             ("/hooks/nowhere", 404, None)]
    wid = tagged("refused")
    for path, status, code in cases:
        reply = post(env, adapter, path, {"x": 1}, webhook_id=wid)
        assert reply.status_code == status, (path, reply.text)
        if code is not None:
            assert reply.json()["error"] == code, path
    assert not env.mark("runs", wid) and env.inbox(run_id) == 0
    assert CLIENT.get(env.urls[adapter] + f"/hooks/runs/{run_id}/paid").status_code == 405


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_concurrent_repeats_of_one_delivery_store_and_apply_it_once(env: Env, adapter: str) -> None:
    run_id = waiting_run(env, "twice")
    path, n = f"/hooks/runs/{run_id}/k", 8
    replies = storm(env, adapter, path, {"n": 1}, tagged("storm"), n)
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200] * (n - 1) + [202], [r.text for r in replies]
    assert len({r.json()["event_id"] for r in replies}) == 1
    run = until(env, run_id, at_second_wait)
    assert env.inbox(run_id) == 0 and run.vars.get("b") is None  # nothing else is queued or applied
    post(env, adapter, path, {"n": 2})
    assert until(env, run_id, lambda r: r.status == RunStatus.COMPLETED).output == {"a": {"n": 1}, "b": {"n": 2}}


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_start_route_makes_one_run_per_delivery_however_often_it_is_sent(env: Env, adapter: str) -> None:
    wid = tagged("order")
    replies = storm(env, adapter, "/hooks/orders", {"order": 17}, wid, 4)  # the same start sent 4 times at once
    assert sorted(r.status_code for r in replies) == [200, 200, 200, 201], [r.text for r in replies]
    run_id = derived_run_id("orders", wid)
    assert {r.json()["run_id"] for r in replies} == {run_id}
    again = post(env, adapter, "/hooks/orders", {"order": 17}, webhook_id=wid)
    assert (again.status_code, again.json()) == (200, {"status": "duplicate", "duplicate": True, "run_id": run_id})
    run = until(env, run_id, lambda r: r.status == RunStatus.WAITING)
    assert run.vars["order"] == 17 and run.workflow_id == "event"
    shipped = post(env, adapter, f"/hooks/runs/{run_id}/shipped", {"carrier": "x"})
    assert shipped.status_code == 202, shipped.text
    assert until(env, run_id, lambda r: r.status == RunStatus.COMPLETED).output == {"event": {"carrier": "x"}}
    assert [r.run_id for r in env.driver.run_store.list_runs(workflow_id="event", limit=1000)].count(run_id) == 1


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_route_function_finds_the_run_and_a_custom_verifier_guards_its_route(env: Env, adapter: str) -> None:
    run_id = waiting_run(env, "event", key="paid")
    fx = redis.Redis.from_url(FX_URL, decode_responses=True)
    fx.hset(table_key(env.settings.key_prefix), f"pay_{adapter}", f"{run_id} paid")
    missing = post(env, adapter, "/hooks/payments", {"data": {"object_id": "pay_nobody"}})
    assert (missing.status_code, missing.json()["error"]) == (404, "unknown_target")
    paid = post(env, adapter, "/hooks/payments", {"data": {"object_id": f"pay_{adapter}", "amount": 5}})
    assert paid.status_code == 202, paid.text
    assert until(env, run_id, lambda r: r.status == RunStatus.COMPLETED).output == {"event": {"paid": 5}}

    legacy_run = waiting_run(env, "event", key="x")
    body = b'{"legacy": true}'
    good = "sha256=" + hmac.new(LEGACY_SECRET, body, "sha256").hexdigest()
    path, delivery = f"/hooks/legacy/{legacy_run}/x", tagged("legacy")
    bad = post(env, adapter, path, raw=body, secrets=None,
               headers={"x-legacy-signature": "sha256=00", "x-legacy-delivery": delivery})
    assert bad.status_code == 401
    std = post(env, adapter, path, raw=body)  # a Standard Webhooks signature is not this route's scheme
    assert std.status_code == 401
    for status in (202, 200):
        reply = post(env, adapter, path, raw=body, secrets=None,
                     headers={"x-legacy-signature": good, "x-legacy-delivery": delivery})
        assert reply.status_code == status, reply.text
    assert until(env, legacy_run, lambda r: r.status == RunStatus.COMPLETED).output == {"event": {"legacy": True}}


# --- the atomic step: the mark and the event together, or neither ------------------------------


def _request(run_id: str, wait_key: str, payload: dict[str, Any], wid: str) -> HookRequest:
    body = json.dumps(payload).encode()
    return HookRequest("POST", f"/hooks/runs/{run_id}/{wait_key}", signed_headers(OLD, wid, body), body)


def test_a_script_error_in_the_put_stores_neither_the_mark_nor_the_event(env: Env) -> None:
    hooks = Webhooks(env.driver)
    run_id, wid = waiting_run(env, "twice"), tagged("script")
    runs_key = env.driver.coord.keys.inbox_runs
    saved = env.store.zrange(runs_key, 0, -1, withscores=True)
    env.store.delete(runs_key)
    env.store.set(runs_key, "not a zset")  # the put's last write would fail after its first ones
    try:
        failed = hooks.handle(_request(run_id, "k", {"n": 1}, wid))
    finally:
        env.store.delete(runs_key)
        if saved:
            env.store.zadd(runs_key, dict(saved))
    assert (failed.status, failed.body["error"]) == (503, "unavailable")
    assert not env.mark("runs", wid) and env.inbox(run_id) == 0
    retried = hooks.handle(_request(run_id, "k", {"n": 1}, wid))
    assert retried.status == 202, retried.body
    until(env, run_id, at_second_wait)
    assert env.inbox(run_id) == 0


def test_a_paused_run_is_409_and_a_full_inbox_429_and_neither_keeps_a_mark(env: Env) -> None:
    from abstractruntime_celery.dispatch import CeleryDispatcher
    from tests.workflows import registry

    paused = waiting_run(env, "event", key="paid")
    env.driver.control.pause(paused)
    wid = tagged("paused")
    reply = Webhooks(env.driver).handle(_request(paused, "paid", {"n": 1}, wid))
    assert (reply.status, reply.body["error"]) == (409, "run_paused") and not env.mark("runs", wid)

    small = make_settings(env.settings.key_prefix, max_inbox_events=1, webhook_secrets=OLD)
    hooks = Webhooks(build(small, registry, CeleryDispatcher(env.app, small.queue), distributed=True))
    napping = waiting_run(env, "timer", delay=60)  # strict keys: events for a later wait are kept
    first, second = tagged("kept"), tagged("full")
    assert hooks.handle(_request(napping, "later", {"n": 1}, first)).status == 202
    full = hooks.handle(_request(napping, "later", {"n": 2}, second))
    assert (full.status, full.body["error"], full.headers) == (429, "inbox_full", {"Retry-After": "5"})
    assert env.mark("runs", first) and not env.mark("runs", second) and env.inbox(napping) == 1
    env.driver.control.cancel(napping)


class CuttingProxy:
    """A TCP proxy to Redis that cuts the client's connection once, at the first EVALSHA of
    ``inbox_put.lua``: before forwarding it (``before``), or after Redis ran it and before
    the reply reaches the client (``after``)."""

    def __init__(self, upstream: tuple[str, int], mode: str) -> None:
        self.upstream, self.mode, self.cut, self.replied = upstream, mode, threading.Event(), threading.Event()
        self.sha = hashlib.sha1(scripts.source("inbox_put").encode()).hexdigest().encode()  # what EVALSHA names
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        upstream, mine = socket.create_connection(self.upstream), threading.Event()
        threading.Thread(target=self._back, args=(upstream, client, mine), daemon=True).start()
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                if self.sha in data and not self.cut.is_set():
                    self.cut.set()
                    mine.set()  # this connection's replies are dropped from now on
                    if self.mode == "after":
                        upstream.sendall(data)
                        self.replied.wait(10)  # Redis ran it; its reply was dropped
                    client.shutdown(socket.SHUT_RDWR)
                    break
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()

    def _back(self, upstream: socket.socket, client: socket.socket, cut: threading.Event) -> None:
        try:
            while True:
                data = upstream.recv(65536)
                if data and cut.is_set():
                    self.replied.set()
                if not data or cut.is_set():
                    break
                client.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.server.close()


@pytest.mark.parametrize("mode", ["before", "after"])
def test_a_connection_cut_during_the_put_leaves_both_or_neither_and_the_retry_applies_once(env: Env,
                                                                                             mode: str) -> None:
    from abstractruntime_celery.dispatch import CeleryDispatcher
    from tests.workflows import registry

    store = urlsplit(STORE_URL)
    proxy = CuttingProxy((store.hostname or "127.0.0.1", store.port or 6379), mode)
    try:
        netloc = store.netloc.rsplit("@", 1)[0] + "@" if "@" in store.netloc else ""
        proxied = urlunsplit(store._replace(netloc=f"{netloc}127.0.0.1:{proxy.port}"))
        settings = make_settings(env.settings.key_prefix, store_url=proxied, webhook_secrets=OLD)
        driver = build(settings, registry, CeleryDispatcher(env.app, settings.queue), distributed=True)
        hooks = Webhooks(driver)
        run_id = waiting_run(env, "twice")
        wid = tagged(f"cut_{mode}")
        cut = hooks.handle(_request(run_id, "k", {"n": 1}, wid))
        assert proxy.cut.is_set()
        assert (cut.status, cut.body["error"]) == (503, "unavailable")
        stored = env.mark("runs", wid), env.inbox(run_id) + int(env.driver.load(run_id).vars.get("a") is not None)
        assert stored == ((True, 1) if mode == "after" else (False, 0))
        retry = hooks.handle(_request(run_id, "k", {"n": 1}, wid))  # the sender tries again
        assert retry.status == (200 if mode == "after" else 202), retry.body
        if mode == "after":
            env.driver.send(run_id, "event")  # the cut lost the tick: the sweep would send it
        run = until(env, run_id, at_second_wait)
        assert env.inbox(run_id) == 0 and run.vars.get("b") is None
    finally:
        proxy.close()


# --- the pieces on their own ---------------------------------------------------------------------


def test_setup_mistakes_fail_when_the_receiver_is_built(env: Env) -> None:
    from abstractruntime_celery.errors import ConfigError

    for kwargs in (dict(secrets=""), dict(secrets="whsec_not*base64"),
                   dict(routes=[start_route("/hooks/x", "no-such-workflow")]),
                   dict(tolerance_s=300, dedupe_s=100)):
        with pytest.raises(ConfigError):
            Webhooks(env.driver, **kwargs)
    assert env.bad_serve.wait(60) != 0  # `webhooks serve` with a malformed secret never listens
    assert "ConfigError" in env.bad_log.read_text() and "whsec_" in env.bad_log.read_text()


def test_the_embedded_mode_dedupes_in_memory() -> None:
    from abstractruntime_celery import create_scheduled_runtime
    from tests.workflows import registry

    sr = create_scheduled_runtime(registry=registry)
    try:
        hooks = Webhooks(sr, secrets=OLD, routes=None)
        run_id, state = sr.run(registry.get("twice"))
        assert state.status == RunStatus.WAITING
        first = hooks.handle(_request(run_id, "k", {"n": 1}, "msg_local"))
        again = hooks.handle(_request(run_id, "k", {"n": 1}, "msg_local"))
        assert (first.status, again.status, again.body["event_id"]) == (202, 200, first.body["event_id"])
        run = sr.wait_for(run_id, until=at_second_wait)
        assert run.vars.get("b") is None and not sr.driver.coord.inbox.pending(run_id).events
    finally:
        sr.stop()
