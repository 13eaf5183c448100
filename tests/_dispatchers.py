"""Dispatchers for in-process tests that deliver messages by calling ``Driver.tick`` by hand."""

from __future__ import annotations

from datetime import datetime
from typing import Optional


class Recorder:
    """Records every message a driver sends (run id, reason, eta, message id); sends none."""

    min_eta_s = 0.0

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Optional[datetime], Optional[str]]] = []

    def send(self, run_id: str, reason: str = "tick", eta: Optional[datetime] = None,
             message_id: Optional[str] = None) -> None:
        self.sent.append((run_id, reason, eta, message_id))
