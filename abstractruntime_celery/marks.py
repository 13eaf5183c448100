"""Small per-run notes the tick path keeps beside the store: failed-attempt counts
and when a run was first seen naming an unregistered workflow."""

from __future__ import annotations

import threading
import time
from typing import Any

from .context import TickContext
from .keys import Keys

DAY_S = 86400


class RunMarks:
    """``{p}attempts:<id>`` and ``{p}unknown:<id>`` in Redis, or a dict."""

    def __init__(self, client: Any | None, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._lock = threading.Lock()
        self._local: dict[str, float] = {}

    def add_attempt(self, run_id: str) -> int:
        """Count one more failed tick; returns the count."""
        key = self.keys.attempts(run_id)
        if self.client is not None:
            pipe = self.client.pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, DAY_S)
            return int(pipe.execute()[0])
        with self._lock:
            self._local[key] = self._local.get(key, 0) + 1
            return int(self._local[key])

    def clear_attempts(self, run_id: str, ctx: TickContext | None = None) -> None:
        self._clear(self.keys.attempts(run_id), ctx)

    def unknown_since(self, run_id: str) -> float:
        """When this run was first seen with an unregistered workflow (now, if just now)."""
        key = self.keys.unknown(run_id)
        now = time.time()
        if self.client is not None:
            self.client.set(key, now, nx=True, ex=30 * DAY_S)
            return float(self.client.get(key) or now)
        with self._lock:
            return self._local.setdefault(key, now)

    def clear_unknown(self, run_id: str, ctx: TickContext | None = None) -> None:
        self._clear(self.keys.unknown(run_id), ctx)

    def _clear(self, key: str, ctx: TickContext | None) -> None:
        """Now, or in a tick with its release (a cleanup nobody waits for)."""
        if self.client is not None:
            if ctx is not None:
                ctx.queue.add_after(self.client, lambda pipe: pipe.delete(key))
            else:
                self.client.delete(key)
            return
        with self._lock:
            self._local.pop(key, None)
