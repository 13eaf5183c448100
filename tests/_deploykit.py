"""Reading the deploy kit (``deploy/``) the way its runners would: systemd units and env
files, Compose interpolation, Kubernetes ``$(VAR)`` expansion. The deploy tests then run the
exact command lines found there, with only the URLs, prefix and queue changed, through the
environment variables the files already read.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any, Mapping

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """A systemd unit file: section -> key -> values (a key may repeat). Lines ending in a
    backslash go on on the next line; ``#`` and ``;`` start comments.

    Raises:
        ValueError: a line outside a section, or neither a section nor ``key=value``.
    """
    sections: Unit = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is None or "=" not in line:
            raise ValueError(f"{path.name}:{number}: not a section or key=value: {raw!r}")
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def parse_env_file(path: Path) -> dict[str, str]:
    """An ``EnvironmentFile=``: ``KEY=VALUE`` lines, ``#`` comments.

    Raises:
        ValueError: a line that is not ``KEY=VALUE``.
    """
    env: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{path.name}:{number}: not KEY=VALUE: {raw!r}")
        env[key] = value.strip().strip('"')
    return env


def systemd_argv(exec_start: str, env: Mapping[str, str], specifiers: Mapping[str, str]) -> list[str]:
    """``ExecStart=`` as systemd runs it: specifiers (``%i``, ``%H``, ``%S``, ``%%``), then
    words, then ``${VAR}`` (in a word) and ``$VAR`` (a word of its own, split on spaces).

    Raises:
        KeyError: a specifier or variable the caller did not give.
    """
    text = re.sub(r"%(.)", lambda m: "%" if m.group(1) == "%" else specifiers[m.group(1)], exec_start)
    argv: list[str] = []
    for word in shlex.split(text):
        bare = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if bare:
            argv.extend(env[bare.group(1)].split())
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env[m.group(1)], word))
    return argv


_COMPOSE_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose interpolation of every string in ``value``: ``$$``, ``$VAR``, ``${VAR}``,
    ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alt}``.

    Raises:
        KeyError: a required variable (``?``) is missing.
    """
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(5)
        op, arg = m.group(3), m.group(4) or ""
        have = name in env
        nonempty = have and env[name] != ""
        if op in (":-", "-"):
            return env[name] if (nonempty if op == ":-" else have) else arg
        if op in (":?", "?"):
            if not (nonempty if op == ":?" else have):
                raise KeyError(f"{name}: {arg}")
            return env[name]
        if op in (":+", "+"):
            return arg if (nonempty if op == ":+" else have) else ""
        return env.get(name, "")

    return _COMPOSE_VAR.sub(one, value)


def k8s_expand(word: str, env: Mapping[str, str]) -> str:
    """Kubernetes' expansion of ``command``/``args``: ``$(VAR)`` from the container's
    environment (left as written when undefined), ``$$`` for a literal ``$``."""
    return re.sub(r"\$(\$|\(([A-Za-z_][A-Za-z0-9_]*)\))",
                  lambda m: "$" if m.group(1) == "$" else env.get(m.group(2), m.group(0)), word)


def load_compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def load_k8s() -> list[dict[str, Any]]:
    """Every object of every manifest in ``deploy/k8s`` (the kustomization file aside)."""
    docs: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def k8s_object(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """Raises: LookupError: no such object."""
    for doc in docs:
        if doc.get("kind") == kind and doc.get("metadata", {}).get("name") == name:
            return doc
    raise LookupError(f"no {kind} {name} in deploy/k8s")


def local_argv(argv: list[str]) -> list[str]:
    """The same command line with its program taken from this interpreter (a unit names
    ``/srv/abstractruntime/.venv/bin/celery``, an image ``celery``): nothing else changes.

    Raises:
        ValueError: a program the kit should not run.
    """
    program = Path(argv[0]).name
    if program == "celery":
        return [sys.executable, "-m", "celery", *argv[1:]]
    if program == "abstractruntime-celery":
        return [sys.executable, "-m", "abstractruntime_celery", *argv[1:]]
    raise ValueError(f"unexpected program in the deploy kit: {argv[0]}")
