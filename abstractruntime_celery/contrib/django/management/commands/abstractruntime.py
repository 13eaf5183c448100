"""``manage.py abstractruntime <command> ...``: the ``abstractruntime-celery`` command (the
click group ``abstractruntime_celery.cli.main``) with the settings of this Django project, so
it reaches the same store, key prefix, queue and broker as the project's workers."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from dataclasses import fields
from typing import Any, Iterator

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "The abstractruntime-celery command (runs, stats, sweep, ...) on this project's settings."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("cli_args", nargs=argparse.REMAINDER, help="the command and its arguments")

    def run_from_argv(self, argv: list[str]) -> None:
        """``manage.py abstractruntime ...``: the click group parses everything (its --help
        too), not Django's argparse.

        Raises:
            SystemExit: the command failed (status 1 with its error on stderr, as Django's
                commands do, or the click command's own status).
        """
        try:
            code = run_cli(argv[2:], prog_name=f"{os.path.basename(argv[0])} {argv[1]}")
        except CommandError as exc:
            self.stderr.write(f"{type(exc).__name__}: {exc}")
            sys.exit(exc.returncode)
        finally:
            from django.db import connections

            connections.close_all()
        if code:
            sys.exit(code)

    def handle(self, *args: Any, **options: Any) -> None:
        """``call_command("abstractruntime", "stats")``.

        Raises:
            CommandError: as ``run_cli``, or the command exited with a non-zero status.
        """
        code = run_cli(list(options.get("cli_args") or args))
        if code:
            raise CommandError(f"abstractruntime exited with status {code}")


def cli_environment(app: Any) -> dict[str, str]:
    """The ``ABSTRACTRUNTIME_CELERY_*`` variables that make the command read this project's
    settings (and broker): the command reads its settings as a worker does, and the
    environment is the source it ranks first. A registry given to ``install`` as an object
    cannot travel this way: name it in ``CELERY_ABSTRACTRUNTIME_REGISTRY``.

    Raises:
        ConfigError: a setting of the project is malformed.
    """
    from abstractruntime_celery.tasks import settings_for

    settings = settings_for(app)
    env = {f"ABSTRACTRUNTIME_CELERY_{f.name.upper()}": str(getattr(settings, f.name)) for f in fields(settings)}
    registry = settings.registry or app.conf.get("abstractruntime_registry_object")
    if isinstance(registry, str) and registry:
        env["ABSTRACTRUNTIME_CELERY_REGISTRY"] = registry
    if app.conf.broker_url:
        env["ABSTRACTRUNTIME_CELERY_BROKER_URL"] = str(app.conf.broker_url)
    return {k: v for k, v in env.items() if v != ""}


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_cli(args: list[str], prog_name: str = "manage.py abstractruntime") -> int:
    """Run the click group with ``args`` in this process; returns its exit status.

    Raises:
        CommandError: a usage error, or an error of this package (its message, no traceback).
    """
    import click

    from abstractruntime_celery.cli import main
    from abstractruntime_celery.errors import AbstractRuntimeCeleryError

    from abstractruntime_celery.contrib.django import celery_app

    with _environment(cli_environment(celery_app())):
        try:
            result = main.main(args=args, prog_name=prog_name, standalone_mode=False)
        except click.exceptions.Abort as exc:
            raise CommandError("Aborted") from exc
        except click.ClickException as exc:
            raise CommandError(exc.format_message()) from exc
        except AbstractRuntimeCeleryError as exc:
            raise CommandError(f"{type(exc).__name__}: {exc}") from exc
    return result if isinstance(result, int) else 0
