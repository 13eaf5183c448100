"""Keep the host's logging as it is while AbstractRuntime's heavy helpers load.

Importing ``abstractruntime.utils`` (which AbstractRuntime does the first time it
handles START_SUBWORKFLOW, through abstractcore's ``structured_logging``)
clears the root logger's handlers and installs one stdout handler at ERROR: a
worker's Celery lines, our warnings and even task errors would vanish, and an
embedded app would lose its own logging. We import it once, early, and put the
root logger back exactly as it was.
"""

from __future__ import annotations

import logging
import threading

_lock = threading.Lock()
_done = False


def keep_host_logging() -> None:
    """Import ``abstractruntime.utils`` now (once per process), keeping the root logger's
    handlers and level as they were before."""
    global _done
    with _lock:
        if _done:
            return
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            import abstractruntime.utils  # noqa: F401  (configures logging on import)
        except ImportError:  # pragma: no cover - releases without it configure nothing
            pass
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
            _done = True
