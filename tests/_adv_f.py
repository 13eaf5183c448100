"""Helpers of the adversarial tests in tests/test_adv_f_*.py.

``HoldProxy``: a TCP proxy in front of a Redis that holds, once, the n-th chunk a client
sends that contains every one of some byte strings, until ``let_go()``: what follows on
that connection waits behind it (a slow network, a frozen sender). It only delays bytes;
nothing of the package is touched.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, Iterable, Optional


class HoldProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held = threading.Event()
        self._go = threading.Event()
        self._needles: Optional[list[bytes]] = None
        self._skip = 0
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._closed = False
        self.held_data = b""
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def hold(self, needles: Iterable[str | bytes], *, nth: int = 1) -> None:
        """Hold the ``nth`` outbound chunk (from now on) containing every needle."""
        with self._lock:
            self._needles = [n.encode() if isinstance(n, str) else n for n in needles]
            self._skip = nth - 1
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
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _holds(self, data: bytes) -> bool:
        with self._lock:
            if self._needles is None or not all(n in data for n in self._needles):
                return False
            if self._skip > 0:
                self._skip -= 1
                return False
            self._needles = None
            self.held_data = data
        return True

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if outbound and self._holds(data):
                    self.held.set()
                    self._go.wait(60)
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


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


class Side:
    """Run ``fn`` in a daemon thread; ``result()`` joins it and returns or raises what it did."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._out: dict[str, Any] = {}

        def run() -> None:
            try:
                self._out["value"] = fn()
            except BaseException as exc:  # handed to the test thread
                self._out["error"] = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def done(self) -> bool:
        return not self.thread.is_alive()

    def result(self, timeout: float = 60.0) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the side thread did not finish"
        if "error" in self._out:
            raise self._out["error"]
        return self._out.get("value")
