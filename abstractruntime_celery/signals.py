"""Signals about runs, sent in the process that did the work, and published
cluster-wide on ``<prefix>notices`` so a ``Scheduler`` in another process can
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

from .batch import defer

log = logging.getLogger(__name__)

#: A waiting run moved on (timer fired, event applied, child ended). Args: run_id, status.
run_resumed = Signal(name="abstractruntime.run_resumed", providing_args={"run_id", "status"})
#: A tick failed, or a run names an unknown workflow. Args: run_id, error (str).
run_failed = Signal(name="abstractruntime.run_failed", providing_args={"run_id", "error"})


class Notices:
    """Sends the signals here and publishes them for other processes."""

    def __init__(self, client: Any | None, prefix: str) -> None:
        self.client = client
        self.channel = f"{prefix}notices"

    def resumed(self, run_id: str, status: str) -> None:
        run_resumed.send(sender=self, run_id=run_id, status=status)
        self._publish({"kind": "resumed", "run_id": run_id, "status": status})

    def failed(self, run_id: str, error: str) -> None:
        run_failed.send(sender=self, run_id=run_id, error=error)
        self._publish({"kind": "failed", "run_id": run_id, "error": error})

    def _publish(self, notice: dict[str, str]) -> None:
        if self.client is None:
            return
        message = json.dumps(notice)
        try:
            defer(self.client, lambda c: c.publish(self.channel, message))
        except Exception:  # a notice is best effort; the store is the truth
            log.warning("could not publish notice %s", notice, exc_info=True)


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
