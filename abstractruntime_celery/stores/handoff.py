"""Hand the run the tick path has just read to the Runtime's next load of it.

The tick path reads a run to find its workflow, then ``Runtime.tick`` reads it
again first thing. Under the run's lease nobody else saves it in between (an
external cancel is seen by the Runtime's own control probe), so the second read
can take the first one's object: one round trip and one JSON decode fewer per tick.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Iterator, Optional

from abstractruntime import RunState

_handoff: contextvars.ContextVar[Optional[RunState]] = contextvars.ContextVar(
    "abstractruntime_celery_handoff", default=None
)


@contextmanager
def handing_off(run: RunState) -> Iterator[None]:
    """Offer ``run`` to the next ``take(run.run_id)`` made while the block runs."""
    token = _handoff.set(run)
    try:
        yield
    finally:
        _handoff.reset(token)


def take(run_id: str) -> Optional[RunState]:
    """The run offered for ``run_id``, once; None when nothing is offered."""
    run = _handoff.get()
    if run is None or run.run_id != run_id:
        return None
    _handoff.set(None)
    return run
