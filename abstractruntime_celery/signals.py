"""Signals about runs, sent in the process that did the work, and published
cluster-wide on ``{p}notices`` so a ``Scheduler`` in another process can
call its ``on_run_resumed`` / ``on_run_failed`` callbacks.

Connect in a worker module as with any Celery signal::

    from abstractruntime_celery.signals import run_failed
    @run_failed.connect
    def alert(sender, run_id, error, **kw): ...
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable

from celery.utils.dispatch import Signal

from .keys import Keys

log = logging.getLogger(__name__)

#: A waiting run moved on (timer fired, event applied, child ended). Args: run_id, status.
run_resumed = Signal(name="abstractruntime.run_resumed", providing_args={"run_id", "status"})
#: A tick failed, or a run names an unknown workflow. Args: run_id, error (str).
run_failed = Signal(name="abstractruntime.run_failed", providing_args={"run_id", "error"})


class Notices:
    """Sends the signals here and publishes them for other processes (``{p}notices``).

    Outside a tick, ``resumed``/``failed`` do both at once. A tick collects its notices
    in its context and sends them after its release, only if its commit held
    (``tick.py``); the publish then rides the release pipeline (``message``).
    """

    def __init__(self, client: Any | None, keys: Keys) -> None:
        self.client = client
        self.channel = keys.notices

    def resumed(self, run_id: str, status: str) -> None:
        self.signal("resumed", run_id, status)
        self.publish(self.message("resumed", run_id, status))

    def failed(self, run_id: str, error: str) -> None:
        self.signal("failed", run_id, error)
        self.publish(self.message("failed", run_id, error))

    def signal(self, kind: str, run_id: str, detail: str) -> None:
        """Send the in-process Celery signal (receivers run in this thread; sender: us)."""
        if kind == "resumed":
            run_resumed.send(sender=self, run_id=run_id, status=detail)
        else:
            run_failed.send(sender=self, run_id=run_id, error=detail)

    @staticmethod
    def message(kind: str, run_id: str, detail: str) -> str:
        key = "status" if kind == "resumed" else "error"
        return json.dumps({"kind": kind, "run_id": run_id, key: detail})

    def publish(self, message: str) -> None:
        """Publish to other processes now (best effort; nothing without Redis)."""
        if self.client is None:
            return
        try:
            self.client.publish(self.channel, message)
        except Exception:  # a notice is best effort; the store is the truth
            log.warning("could not publish notice %s", message, exc_info=True)


class NoticeListener:
    """A daemon thread that calls ``callback(notice_dict)`` for every published notice."""

    def __init__(self, client: Any, channel: str, callback: Callable[[dict[str, str]], None]) -> None:
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(channel)
        self._callback = callback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="arc-notices", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self._pubsub.get_message(timeout=0.2)
            except Exception:
                log.warning("notice listener lost its connection", exc_info=True)
                self._stop.wait(1.0)
                continue
            if not msg:
                continue
            try:
                self._callback(json.loads(msg["data"]))
            except Exception:
                log.exception("notice callback failed")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        try:
            self._pubsub.close()
        except Exception:
            pass
