"""One small error hierarchy: every error names the run, workflow or key it is about.

Each class also subclasses the builtin a caller would naturally catch
(``KeyError`` for unknown things, ``ValueError`` for bad input, ...), so code
written against the seed's ``Scheduler`` keeps working.
"""

from __future__ import annotations


class AbstractRuntimeCeleryError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(AbstractRuntimeCeleryError, ValueError):
    """A setting is missing or malformed (names the setting)."""


class UnknownRunError(AbstractRuntimeCeleryError, KeyError):
    """No run with this id exists in the run store."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"Run '{run_id}' not found")
        self.run_id = run_id

    def __str__(self) -> str:  # KeyError would quote the message again
        return str(self.args[0])


class UnknownWorkflowError(AbstractRuntimeCeleryError, KeyError):
    """The workflow registry of this process does not know ``workflow_id``."""

    def __init__(self, workflow_id: str, run_id: str | None = None) -> None:
        where = f" (run '{run_id}')" if run_id else ""
        super().__init__(f"Workflow '{workflow_id}' is not registered in this process{where}")
        self.workflow_id = workflow_id
        self.run_id = run_id

    def __str__(self) -> str:
        return str(self.args[0])


class RegistryError(AbstractRuntimeCeleryError, RuntimeError):
    """The workflow registry raised when asked for ``workflow_id`` (a lazy catalogue whose
    files or service failed). Unlike ``UnknownWorkflowError`` nothing is known about the
    workflow: the lookup is asked again later, the message is never dropped for it."""

    def __init__(self, workflow_id: str, cause: str) -> None:
        super().__init__(f"the workflow registry failed to look up '{workflow_id:.120}': {cause}")
        self.workflow_id = workflow_id
        self.cause = cause


class RunNotWaitingError(AbstractRuntimeCeleryError, ValueError):
    """An event was sent to a run that has ended, or that waits on nothing an answer can meet."""

    def __init__(self, run_id: str, status: str, detail: str | None = None) -> None:
        super().__init__(f"Run '{run_id}' is not waiting (status={status})" if detail is None
                         else f"Run '{run_id}' {detail} (status={status})")
        self.run_id = run_id
        self.status = status


class WaitKeyMismatchError(AbstractRuntimeCeleryError, ValueError):
    """The run waits on another key than the one the caller named.

    The message keeps the seed's wording ("wait_key mismatch: expected ..., got ..."),
    which callers of the seed match on.
    """

    def __init__(self, run_id: str, expected: str | None, got: str | None) -> None:
        # No key at all (strict mode, on a fleet) is said as such, not as a key spelled 'None'.
        given = (f"'{got}'" if got is not None
                 else "no key (on a fleet an event must name the key of the wait it answers)")
        super().__init__(f"Run '{run_id}': wait_key mismatch: expected '{expected}', got {given}")
        self.run_id = run_id
        self.expected = expected
        self.got = got


class PayloadError(AbstractRuntimeCeleryError, ValueError):
    """A payload or vars dict is not JSON, not a dict, or too large."""


class StoreError(AbstractRuntimeCeleryError):
    """Base class of run/ledger store failures."""


class StoreUnavailableError(StoreError, ConnectionError):
    """The store's server cannot be reached (names host and port)."""


class CorruptRunError(StoreError, ValueError):
    """The stored record of one run cannot be decoded."""

    def __init__(self, run_id: str, detail: str) -> None:
        super().__init__(f"Run '{run_id}' has a corrupt record: {detail}")
        self.run_id = run_id


class VersionConflictError(StoreError):
    """A compare-and-set save expected an older version than the stored one."""

    def __init__(self, run_id: str, expected: int | None, actual: int | None) -> None:
        super().__init__(
            f"Run '{run_id}' version conflict: expected {expected}, stored {actual}"
        )
        self.run_id = run_id
        self.expected = expected
        self.actual = actual


class LeaseLostError(StoreError):
    """This process no longer holds the run's lease; its write was refused (fencing)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"Lease on run '{run_id}' was lost; stale write refused")
        self.run_id = run_id


class LeaseBusyError(LeaseLostError):
    """A start's lease, reserved with its create, was held by another tick (the same start
    delivered twice at once): nothing was written, and nothing was lost either."""


class RunControlledError(StoreError):
    """A tick's save was refused: the run was cancelled or paused (or resumed) by
    someone else while the tick held its lease. Nothing was written; the control
    action stands, as AbstractRuntime's own control probe would have kept it."""

    def __init__(self, run_id: str, status: str, paused: bool) -> None:
        super().__init__(f"Run '{run_id}' was changed to status={status}, paused={paused} "
                         "by a control action during the tick; the tick's save was refused")
        self.run_id = run_id
        self.status = status
        self.paused = paused


class RunWaitTimeout(AbstractRuntimeCeleryError, TimeoutError):
    """A caller waited for a run to reach a state and the timeout passed first."""

    def __init__(self, run_id: str, timeout: float, status: str) -> None:
        super().__init__(
            f"Run '{run_id}' did not settle within {timeout:.1f}s (status={status})"
        )
        self.run_id = run_id
        self.status = status


class RunPausedError(AbstractRuntimeCeleryError, ValueError):
    """An event was sent to a paused run (a ValueError, as the seed's ``Run is paused``).
    Nothing was stored; resume the run first (``resume_run``)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"Run '{run_id}' is paused; resume it before sending it events")
        self.run_id = run_id


class InboxFullError(PayloadError):
    """The run's inbox is at its limit (events or bytes); nothing was stored."""

    def __init__(self, run_id: str, detail: str) -> None:
        super().__init__(f"Run '{run_id}' inbox {detail}")
        self.run_id = run_id


class RunExistsError(StoreError):
    """A start's create found the run already there (a redelivered start message):
    nothing was written, and the lease it reserved was let go. The start ticks the
    existing run instead."""

    def __init__(self, run_id: str, existing: object = None) -> None:
        super().__init__(f"Run '{run_id}' already exists")
        self.run_id = run_id
        self.existing = existing


class RunBusyError(AbstractRuntimeCeleryError, TimeoutError):
    """A control action (pause, resume, cancel) could not take the run's lease in time."""

    def __init__(self, run_id: str, timeout: float) -> None:
        super().__init__(f"Run '{run_id}' stayed leased by a tick for {timeout:.1f}s; try again")
        self.run_id = run_id


class DuplicateDeliveryError(AbstractRuntimeCeleryError):
    """A delivery (a webhook) was stored before under the same id, within its retention:
    nothing was stored again. ``record`` is what the first delivery stored (JSON text:
    its run id and event id), so the caller can answer the sender as it did the first time."""

    def __init__(self, key: str, record: str) -> None:
        super().__init__(f"Delivery {key!r} was already stored; nothing was stored again")
        self.key = key
        self.record = record


class RetryRefusedError(AbstractRuntimeCeleryError, ValueError):
    """``retry_run`` refused: the run is not FAILED, or it is a child whose parent has
    already taken its failure (a retried child's result would reach nobody). Nothing changed."""

    def __init__(self, run_id: str, detail: str) -> None:
        super().__init__(f"Run '{run_id}' cannot be retried: {detail}")
        self.run_id = run_id


class DispatchError(AbstractRuntimeCeleryError, ConnectionError):
    """The broker refused a tick message after the run (or the event) was stored.

    What was stored stays stored, and the sweep brings it forward without the message
    (an unticked run once it is ``orphan_grace_s`` idle, an event after
    ``event_redeliver_s``). ``run_id`` names the run, so a caller can follow it
    (``wait_for``) or start it again: a start with the same ``run_id`` finds the run and
    sends its tick, it never makes a second one. ``event_id`` names the stored event, if any.
    """

    def __init__(self, run_id: str, reason: str, cause: str, event_id: str | None = None) -> None:
        super().__init__(run_id, reason, cause, event_id)
        self.run_id = run_id
        self.reason = reason
        self.cause = cause
        self.event_id = event_id

    def __str__(self) -> str:
        what = f"Run '{self.run_id}'" + (f" (event '{self.event_id}')" if self.event_id else "")
        said = f"{what} is stored, but its {self.reason} tick could not be sent to the broker: {self.cause.rstrip('.')}."
        if self.event_id:  # the event is kept: sending it again would answer twice
            return (f"{said} The sweep sends its tick again after event_redeliver_s: do not send the "
                    "event again")
        if self.reason == "start":
            return (f"{said} The sweep brings it forward; to start it again use run_id='{self.run_id}' "
                    "(it is never created twice)")
        return f"{said} The sweep brings it forward: nothing needs sending again"
