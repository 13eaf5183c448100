"""What every operator command shares: the cluster it talks to, how it prints, how it exits.

Every command takes ``--store``, ``--prefix``, ``--broker`` and ``--json``
(``target_options``). The first three default to the workers' own settings
(``ABSTRACTRUNTIME_CELERY_STORE_URL``, ``..._KEY_PREFIX``, ``..._BROKER_URL`` or
``CELERY_BROKER_URL``, then ``celeryconfig.py``): an operator's shell that has the
workers' environment needs no flag. The driver is opened through the ``Scheduler``
(so through ``driver.build``, the one composition root), and each command prints
what it connected to, passwords masked.

A failure is one line (``--json``: one JSON object) and an exit code an operator or a
probe can act on, never a traceback: see ``ExitCode``. Other groups (metrics,
webhooks, ...) use ``target_options`` and ``Target`` the same way.
"""

from __future__ import annotations

import enum
import functools
import json
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

import click

from .errors import (
    AbstractRuntimeCeleryError,
    ConfigError,
    InboxFullError,
    PayloadError,
    StoreUnavailableError,
    UnknownRunError,
    UnknownWorkflowError,
)
from .redact import redact_url

#: A URL in an error message (masked before it is printed).
_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"]+", re.IGNORECASE)

__all__ = ["ExitCode", "Target", "TargetSpec", "BrokerUnreachable", "target_options", "emit"]


class ExitCode(enum.IntEnum):
    """The CLI's exit codes (the README's "Operating it" lists them)."""

    #: Done; ``health``: every check passed.
    OK = 0
    #: The cluster answered no: the run refuses (not waiting, paused, wrong wait key, full inbox,
    #: not FAILED, a child whose parent took its failure, busy, timed out); ``health``: unhealthy.
    REFUSED = 1
    #: The command line is wrong: an unknown option, malformed JSON or run id, a payload the
    #: checks refuse, a bad setting or registry (click's own code for usage errors).
    USAGE = 2
    #: No such run.
    NOT_FOUND = 3
    #: The store (or coordination) Redis or the broker cannot be reached.
    UNREACHABLE = 4


class BrokerUnreachable(Exception):
    """The broker did not answer (the message names it, password masked)."""


@dataclass(frozen=True)
class TargetSpec:
    """What the command line said about the cluster (None: the settings' default)."""

    store: Optional[str] = None
    prefix: Optional[str] = None
    broker: Optional[str] = None
    as_json: bool = False


class Target:
    """An opened cluster: settings, the Celery app (for the broker) and the ``Scheduler``
    whose driver every command uses. Open with ``Target.open``."""

    def __init__(self, spec: TargetSpec, app: Any, scheduler: Any) -> None:
        self.spec = spec
        self.app = app
        self.scheduler = scheduler

    @staticmethod
    def make_app(spec: TargetSpec) -> Any:
        """The Celery app of ``spec`` (its broker; ``celeryconfig.py`` if importable).

        Raises:
            ConfigError: the configuration accepts pickle or a setting is malformed.
        """
        from .app import make_app

        return make_app(spec.broker, name="abstractruntime-celery-cli")

    @classmethod
    def open(cls, spec: TargetSpec, app: Any = None) -> "Target":
        """Build the driver for ``spec`` (settings from flags, environment, celeryconfig),
        on ``app`` (default: ``make_app(spec)``).

        Raises:
            ConfigError: a setting, URL or the registry path is wrong (also a non-shared store).
            StoreUnavailableError: the store or coordination Redis cannot be reached.
        """
        from .config import load_settings
        from .registry import load_registry
        from .scheduler import Scheduler

        app = app if app is not None else cls.make_app(spec)
        settings = load_settings(app.conf, store_url=spec.store, key_prefix=spec.prefix)
        if settings.store_url == "memory://":
            raise ConfigError("No shared store configured: pass --store redis://host:port/db or set "
                              "ABSTRACTRUNTIME_CELERY_STORE_URL (the workers' store)")
        registry = load_registry(settings.registry)
        try:
            scheduler = Scheduler(runtime=None, registry=registry, app=app, settings=settings)
        except StoreUnavailableError as exc:
            raise StoreUnavailableError(f"store {redact_url(settings.store_url)}: {exc}") from None
        return cls(spec, app, scheduler)

    @property
    def driver(self) -> Any:
        return self.scheduler.driver

    @property
    def settings(self) -> Any:
        from .tasks import settings_for

        return self.scheduler.settings if self.scheduler is not None else settings_for(self.app)

    @property
    def broker_url(self) -> str:
        return str(self.app.conf.broker_url or "")

    def where(self) -> dict[str, str]:
        """What this command talks to, passwords masked."""
        out = {"store": redact_url(self.settings.store_url), "prefix": self.settings.key_prefix,
               "broker": redact_url(self.broker_url), "queue": self.settings.queue}
        coord = self.settings.resolved_coord_url(self.broker_url)
        if coord != self.settings.store_url:
            out["coord"] = redact_url(coord)
        return out

    def check_broker(self, timeout_s: float = 3.0) -> None:
        """One connection to the broker, before a command changes anything it must then
        announce with a message.

        Raises:
            BrokerUnreachable: it did not answer within ``timeout_s``.
        """
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=timeout_s)
        except Exception as exc:  # kombu's OperationalError, socket errors, a malformed URL
            raise BrokerUnreachable(f"broker {redact_url(self.broker_url)}: {_one_line(exc)}") from None

    def header(self) -> None:
        """The human output's first line: what the command connected to (and, on stderr, a
        warning if the key prefix is one nothing has used)."""
        if not self.spec.as_json:
            parts = "  ".join(f"{k} {v}" for k, v in self.where().items())
            click.secho(parts, dim=True)
            warning = self.unused_prefix()
            if warning:
                click.secho(f"warning: {warning}", fg="yellow", err=True)

    def unused_prefix(self) -> str:
        """A warning if no worker has started and no run was made under the key prefix (a
        mistyped ``--prefix`` reads as an empty cluster); "" otherwise. Nothing is written."""
        if self.scheduler is None or self.driver.coord.marked:
            return ""
        return (f"nothing under key prefix {self.settings.key_prefix!r} in {redact_url(self.settings.store_url)}: "
                "no worker has started on it and no run was made there (are --store and --prefix the workers'?)")


def emit(target: Target, data: dict[str, Any], human: Callable[[], None]) -> None:
    """Print a command's result: JSON (``{"ok": true, "target": ..., **data}``) or ``human()``
    after the header. Raises what ``human`` raises (nothing, for ours)."""
    if target.spec.as_json:
        warning = target.unused_prefix()
        said = {"warning": warning} if warning else {}
        click.echo(json.dumps({"ok": True, "target": target.where(), **said, **data}, default=str))
    else:
        target.header()
        human()


def target_options(func: Callable[..., Optional[int]]) -> Callable[..., None]:
    """Add ``--store/--prefix/--broker/--json`` to a command; it is called with a
    ``TargetSpec`` first. Its return value (an ``ExitCode``, None for OK) is the exit code;
    the errors of this package, Redis and the broker become one line and their code."""

    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object (errors too).")
    @click.option("--broker", default=None, metavar="URL",
                  help="Celery broker [env ABSTRACTRUNTIME_CELERY_BROKER_URL, CELERY_BROKER_URL; "
                       "celeryconfig.py; default redis://127.0.0.1:6379/0].")
    @click.option("--prefix", default=None, metavar="PREFIX",
                  help="Redis key prefix [env ABSTRACTRUNTIME_CELERY_KEY_PREFIX; default arc:].")
    @click.option("--store", default=None, metavar="URL",
                  help="Run store [env ABSTRACTRUNTIME_CELERY_STORE_URL; celeryconfig.py].")
    @functools.wraps(func)
    def command(*args: Any, store: Optional[str], prefix: Optional[str], broker: Optional[str],
                as_json: bool, **kwargs: Any) -> None:
        spec = TargetSpec(store=store, prefix=prefix, broker=broker, as_json=as_json)
        try:
            code = func(spec, *args, **kwargs)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:
            classified = classify(exc)
            if classified is None:
                raise  # a bug: its traceback is the report
            code, kind = classified
            message = _one_line(exc)
            if code == ExitCode.NOT_FOUND and not spec.as_json:  # the usual cause: another store or prefix
                message += " (are --store and --prefix the workers' store and key prefix?)"
            fail(spec, code, kind, message)
        raise click.exceptions.Exit(int(code if code is not None else ExitCode.OK))

    return command


def fail(spec: TargetSpec, code: ExitCode, kind: str, message: str) -> None:
    """Print one line (``--json``: one JSON object on stdout) and exit with ``code``.

    Raises:
        click.exceptions.Exit: always (``main(..., standalone_mode=False)`` returns its code).
    """
    if spec.as_json:
        click.echo(json.dumps({"ok": False, "error": kind, "message": message, "exit_code": int(code)}))
    else:
        click.echo(f"abstractruntime-celery: {kind}: {message}", err=True)
    raise click.exceptions.Exit(int(code))


def classify(exc: BaseException) -> Optional[tuple[ExitCode, str]]:
    """The exit code and a short kind for an error, or None for one that is a bug. Raises nothing."""
    import redis
    from kombu.exceptions import OperationalError

    if isinstance(exc, (StoreUnavailableError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return ExitCode.UNREACHABLE, "unreachable"
    if isinstance(exc, (BrokerUnreachable, OperationalError)):
        return ExitCode.UNREACHABLE, "unreachable"
    if isinstance(exc, UnknownRunError):
        return ExitCode.NOT_FOUND, "not found"
    if isinstance(exc, InboxFullError):
        return ExitCode.REFUSED, "refused"
    if isinstance(exc, (ConfigError, PayloadError, UnknownWorkflowError)):
        return ExitCode.USAGE, "bad input" if isinstance(exc, PayloadError) else "configuration"
    if isinstance(exc, AbstractRuntimeCeleryError):
        return ExitCode.REFUSED, "refused"
    return None


def _one_line(exc: BaseException) -> str:
    """The error as one line: ``Type: message``, whitespace folded, passwords masked."""
    text = re.sub(r"\s+", " ", str(exc)).strip()
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)  # (our messages mask already: a backstop)
    name = type(exc).__name__
    if isinstance(exc, BrokerUnreachable):
        return text
    return f"{name}: {text}" if text else name


def load_json_object(text: str, what: str) -> dict[str, Any]:
    """``text`` as a JSON object (``@path`` reads a file, ``-`` stdin).

    Raises:
        click.BadParameter: not readable, not JSON, or not an object (exit code 2).
    """
    source = text
    try:
        if text == "-":
            text = sys.stdin.read()
        elif text.startswith("@"):
            with open(text[1:], encoding="utf-8") as fh:
                text = fh.read()
    except (OSError, ValueError) as exc:  # a missing or unreadable file is not a JSON mistake
        raise click.BadParameter(f"{what} {source}: cannot read it: {exc}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise click.BadParameter(f"{what} must be a JSON object, got {type(value).__name__}")
    return value
