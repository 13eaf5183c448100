"""A TCP proxy in front of a Redis server, for tests that cut or split a client's traffic
at an exact command: a write that lands with its reply lost, a pipeline split in two.

``CutProxy`` forwards bytes both ways. ``cut_after(needles)`` arms it: the next outbound
chunk holding every needle is handed to ``on_cut`` (by default: forwarded whole, then the
connection is closed before any reply comes back). Subclasses change only ``on_cut``.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Optional


class CutProxy:
    """Forwards bytes both ways, and cuts the connection at an armed chunk (see module)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._needles: Optional[list[bytes]] = None
        self._lock = threading.Lock()
        self.cuts = 0
        #: The needles of the last cut (``on_cut`` may look for them in the chunk).
        self.cut_needles: list[bytes] = []
        #: New connections are refused until then (``time.monotonic``): a failover.
        self.down_until = 0.0
        #: Set each time a reply chunk comes back from the server.
        self.replied = threading.Event()
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def cut_after(self, *needles: str) -> None:
        with self._lock:
            self._needles = [n.encode() for n in needles]

    def on_cut(self, data: bytes, src: socket.socket, dst: socket.socket) -> bool:
        """The armed chunk ``data`` arrived from the client ``src``: forward what should go to
        the server ``dst``; True closes the connection. Default: all of it, then close (the
        server runs it; its reply never comes back)."""
        dst.sendall(data)
        return True

    def go_down(self, seconds: float) -> None:
        """Close every connection and refuse new ones for ``seconds``."""
        self.down_until = time.monotonic() + seconds
        for s in list(self._socks):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self.down_until:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _armed(self, data: bytes) -> bool:
        """Is ``data`` the chunk ``cut_after`` waits for? (Disarms it: one cut per arming.)"""
        with self._lock:
            if self._needles is None or not all(n in data for n in self._needles):
                return False
            self.cut_needles, self._needles = self._needles, None
            self.cuts += 1
            return True

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if not outbound:
                    self.replied.set()
                elif self._armed(data):
                    if self.on_cut(data, src, dst):
                        src.shutdown(socket.SHUT_RDWR)
                        break
                    continue
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


def before_last_evalsha(data: bytes, needle: bytes) -> int:
    """Where in a chunk of RESP commands the last ``EVALSHA`` command before ``needle``
    begins (its ``*`` array header); -1 if there is none."""
    return data.rfind(b"*", 0, data.rfind(b"EVALSHA", 0, data.find(needle)))
