"""Keep the host's logging when AbstractRuntime pulls in AbstractCore.

AbstractRuntime imports ``abstractruntime.utils`` lazily, the first time a run
spawns a child (``START_SUBWORKFLOW``). That import loads AbstractCore's
``utils.structured_logging``, which at import clears the root logger's handlers
and installs one stdout handler at ERROR: from then on a Celery worker's own
lines, our warnings and even task errors vanish, and so does an embedding
app's logging. We make that import happen once, up front, and put the root
logger's handlers and level back as they were.
"""

from __future__ import annotations

import importlib
import logging
import threading

__all__ = ["import_upstream_utils"]

#: The module whose import reconfigures logging (through AbstractCore).
UPSTREAM_UTILS = "abstractruntime.utils"

_lock = threading.Lock()
_done = False


def import_upstream_utils() -> None:
    """Import ``abstractruntime.utils`` once per process, keeping the root logger's
    handlers and level exactly as they were before the import.

    Handlers the import added are closed (AbstractCore may open a log file). If the
    module is already imported, nothing happens: whatever it changed then stays.
    Raises nothing: if the import fails (a trimmed install), the failure is logged at
    DEBUG and left to surface where AbstractRuntime itself imports the module.
    """
    global _done
    if _done:
        return
    with _lock:
        if _done:
            return
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            importlib.import_module(UPSTREAM_UTILS)
        except Exception as exc:  # noqa: BLE001 - optional capability stacks may be missing
            logging.getLogger(__name__).debug("could not import %s: %s", UPSTREAM_UTILS, exc)
        finally:
            added = [h for h in root.handlers if h not in handlers]
            root.handlers[:] = handlers
            root.setLevel(level)
            for handler in added:
                handler.close()
        _done = True
