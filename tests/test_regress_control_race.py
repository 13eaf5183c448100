"""``pause_run``, ``resume_run``, ``cancel_run`` and ``cancel_with_children`` never
overwrite a tick's commit.

A control call loads the run, changes it and saves it. Here a real tick (a Celery
worker applying an event) commits between that load and that save: the control call
goes to Redis through a small TCP proxy that holds its save (the first script call
naming the run) on the wire until the tick has committed. Nothing of the package is
touched; the proxy only delays bytes. The tick's commit (the event applied, the node
after it run, the run COMPLETED) must still be there afterwards.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import replace
from typing import Any, Callable, Iterator, Optional

import pytest
from abstractruntime import RunStatus

from abstractruntime_celery import create_scheduled_runtime
from tests.conftest import REDIS, make_app
from tests.workflows_regress_c import build_registry, fx_count

pytestmark = pytest.mark.timeout(120)


class HoldingProxy:
    """A TCP proxy to Redis that can hold, once, the next script call (EVALSHA/EVAL) whose
    bytes name ``needle``, until ``let_go()``: what reached the proxy before it is sent on,
    what follows on that connection waits behind it (as on a slow network)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held = threading.Event()
        self._go = threading.Event()
        self._needle: Optional[bytes] = None
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def hold_next_script_naming(self, needle: str) -> None:
        with self._lock:
            self._needle = needle.encode()
            self.held.clear()
            self._go.clear()

    def let_go(self) -> None:
        self._go.set()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _holds(self, data: bytes) -> bool:
        with self._lock:
            if self._needle is None or b"EVAL" not in data or self._needle not in data:
                return False
            self._needle = None
        return True

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if outbound and self._holds(data):
                    self.held.set()
                    self._go.wait(30)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self._go.set()
        self.listener.close()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass


@pytest.fixture
def proxy() -> Iterator[HoldingProxy]:
    host, port = REDIS.split("//", 1)[1].split(":")
    p = HoldingProxy((host, int(port)))
    yield p
    p.close()


@pytest.fixture
def api(celery_app: Any, settings: Any, worker: Any) -> Iterator[Any]:
    """The application's side, straight to Redis; a real Celery worker ticks its runs."""
    sr = create_scheduled_runtime(app=celery_app, settings=settings, registry=build_registry(), auto_start=False)
    yield sr
    sr.stop()


@pytest.fixture
def ctl(settings: Any, proxy: HoldingProxy) -> Iterator[Any]:
    """An operator's console: the same cluster (prefix, queue), over the holding proxy."""
    db = settings.store_url.rsplit("/", 1)[1]
    slow = replace(settings, store_url=f"redis://127.0.0.1:{proxy.port}/{db}")
    sr = create_scheduled_runtime(app=make_app(slow), settings=slow, registry=build_registry(), auto_start=False)
    yield sr
    sr.stop()


def committed_while_held(proxy: HoldingProxy, run_id: str, control: Callable[[], Any],
                         commit: Callable[[], Any]) -> tuple[Any, Any]:
    """Run ``control`` in a thread; when its save of ``run_id`` reaches the proxy, hold it
    there, run ``commit`` (a tick that commits), then let the save go. Returns both results."""
    out: dict[str, Any] = {}

    def call() -> None:
        try:
            out["control"] = control()
        except BaseException as exc:  # reported below
            out["error"] = exc

    proxy.hold_next_script_naming(run_id)
    side = threading.Thread(target=call, daemon=True)
    side.start()
    try:
        assert proxy.held.wait(15), "the control call never saved the run"
        committed = commit()
    finally:
        proxy.let_go()
        side.join(30)
    assert not side.is_alive()
    if "error" in out:
        raise out["error"]
    return out["control"], committed


def is_paused(run: Any) -> bool:
    control = ((run.vars or {}).get("_runtime") or {}).get("control") or {}
    return bool(control.get("paused"))


def waiting_on_go(api: Any, fx: str) -> str:
    run_id, state = api.run(api.registry.get("rc-event"), vars={"fx": fx})
    assert state.status == RunStatus.WAITING and state.waiting.wait_key == "go"
    return run_id


def answered(api: Any, run_id: str) -> Callable[[], Any]:
    return lambda: api.resume_event(run_id=run_id, wait_key="go", payload={"v": 1}, timeout=8)


def assert_commit_kept(api: Any, run_id: str, fx: str) -> None:
    final = api.get_state(run_id)
    assert final.status == RunStatus.COMPLETED, (final.status, final.waiting, final.error)
    assert final.output == {"event": {"v": 1}}
    assert fx_count(fx, run_id, "done") == 1
    assert not is_paused(final)


def test_pause_run_never_overwrites_a_tick_that_commits_between_its_load_and_its_save(
        api: Any, ctl: Any, proxy: HoldingProxy, fx: str) -> None:
    run_id = waiting_on_go(api, fx)
    paused, committed = committed_while_held(proxy, run_id, lambda: ctl.pause_run(run_id), answered(api, run_id))
    assert committed.status == RunStatus.COMPLETED
    assert_commit_kept(api, run_id, fx)
    assert paused.status == RunStatus.COMPLETED  # it saw the commit, and left an ended run alone


def test_cancel_run_never_overwrites_a_tick_that_commits_between_its_load_and_its_save(
        api: Any, ctl: Any, proxy: HoldingProxy, fx: str) -> None:
    run_id = waiting_on_go(api, fx)
    cancelled, committed = committed_while_held(proxy, run_id, lambda: ctl.cancel_run(run_id), answered(api, run_id))
    assert committed.status == RunStatus.COMPLETED
    assert_commit_kept(api, run_id, fx)
    assert cancelled.status == RunStatus.COMPLETED


def test_resume_run_never_overwrites_a_tick_that_commits_between_its_load_and_its_save(
        api: Any, ctl: Any, proxy: HoldingProxy, fx: str) -> None:
    run_id = waiting_on_go(api, fx)
    api.pause_run(run_id)

    def resumed_elsewhere_and_answered() -> Any:  # another operator resumes it; its event is applied
        api.resume_run(run_id)
        return answered(api, run_id)()

    resumed, committed = committed_while_held(proxy, run_id, lambda: ctl.resume_run(run_id),
                                              resumed_elsewhere_and_answered)
    assert committed.status == RunStatus.COMPLETED
    assert_commit_kept(api, run_id, fx)
    assert resumed.status == RunStatus.COMPLETED


def test_cancel_with_children_never_overwrites_a_parent_tick_that_commits_between_its_load_and_its_save(
        api: Any, ctl: Any, proxy: HoldingProxy, fx: str) -> None:
    parent_id, parent = api.run(api.registry.get("rc-parent"), vars={"fx": fx})
    assert parent.status == RunStatus.WAITING
    child_id = parent.waiting.wait_key.split(":", 1)[1]
    api.wait_for(child_id, timeout=15, until=lambda r: r.status == RunStatus.WAITING)

    def child_ends_and_parent_completes() -> Any:
        api.resume_event(run_id=child_id, wait_key="c", payload={"c": 7}, timeout=8)
        return api.wait_for(parent_id, timeout=8, until=lambda r: r.status == RunStatus.COMPLETED)

    cancelled, committed = committed_while_held(proxy, parent_id, lambda: ctl.cancel_with_children(parent_id),
                                                child_ends_and_parent_completes)
    assert committed.status == RunStatus.COMPLETED
    final = api.get_state(parent_id)
    assert final.status == RunStatus.COMPLETED, (final.status, final.error)
    assert final.output["child"]["output"] == {"event": {"c": 7}}
    assert fx_count(fx, parent_id, "joined") == 1
    assert parent_id not in [r.run_id for r in cancelled]
    assert api.get_state(child_id).status == RunStatus.COMPLETED
