"""Webhook routes: which request path means what, and how a request becomes a target.

A route maps a verified request to a ``Resume`` (an event for a waiting run:
``resume_event``) or a ``Start`` (a new run of a named workflow). The target comes
from the path (``/hooks/runs/{run_id}/{wait_key}``), or from a function of the
route that reads the body (a provider's object id looked up in the user's table).
Path templates are full paths: adapters are mounted at the root and route by them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from ..errors import ConfigError
from .http import HookRequest

#: A route name: it is part of the dedupe mark's key (``{p}hook-seen:<route>:<id>``).
_ROUTE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEFAULT_PATH = "/hooks/runs/{run_id}/{wait_key}"


@dataclass(frozen=True)
class Resume:
    """Deliver ``payload`` to ``run_id``'s wait ``wait_key`` (as ``resume_event``)."""

    run_id: str
    wait_key: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Start:
    """Start a run of ``workflow`` with ``vars``. ``run_id`` None: derived from the route and
    the delivery id, so a retried delivery finds the run the first one made."""

    workflow: str
    vars: dict[str, Any]
    run_id: Optional[str] = None


Target = Union[Resume, Start]


@dataclass(frozen=True)
class HookCall:
    """What a route's function sees of one verified request."""

    route: str
    params: Mapping[str, str]
    body: dict[str, Any]
    delivery_id: str
    request: HookRequest


#: A route's function: the target of a request, or None (no such target: 404). It may raise
#: LookupError (404) or ValueError (422) for a request it cannot map.
Resolver = Callable[[HookCall], Optional[Target]]
#: A provider's own signature check: returns the delivery's id (for dedupe), or raises
#: ``SignatureError`` (401).
Verifier = Callable[[HookRequest], str]


@dataclass(frozen=True)
class Route:
    """One webhook endpoint. ``secrets`` None: the receiver's secrets; ``verifier``: a
    provider's own scheme instead of Standard Webhooks (it must then refuse stale requests
    itself, if the scheme signs a timestamp; repeats are deduped by the id it returns)."""

    name: str
    path: str
    resolve: Resolver
    secrets: Optional[Sequence[str | bytes]] = None
    verifier: Optional[Verifier] = None
    #: The workflow a start route always starts (checked against the registry at start).
    workflow: Optional[str] = None
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _ROUTE_NAME.fullmatch(self.name):
            raise ConfigError(f"webhook route name must be [A-Za-z0-9_-]{{1,64}}, got {self.name!r:.80}")
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ConfigError(f"webhook route {self.name!r}: path must start with '/', got {self.path!r:.80}")
        if not callable(self.resolve):
            raise ConfigError(f"webhook route {self.name!r}: resolve must be callable")
        if self.verifier is not None and not callable(self.verifier):
            raise ConfigError(f"webhook route {self.name!r}: verifier must be callable")
        object.__setattr__(self, "_pattern", _compile(self.path))

    @property
    def params(self) -> list[str]:
        return _PARAM.findall(self.path)

    def rule(self, placeholder: str) -> str:
        """The path in a framework's syntax: each ``{name}`` as ``placeholder.format(name)``
        (Flask: ``"<{}>"``, Django: ``"<str:{}>"``)."""
        return _PARAM.sub(lambda m: placeholder.format(m.group(1)), self.path)

    def match(self, path: str) -> Optional[dict[str, str]]:
        """The path parameters if ``path`` is this route's (each one path segment), else None."""
        found = self._pattern.fullmatch(path)
        return found.groupdict() if found else None


def _compile(template: str) -> re.Pattern[str]:
    parts, last = [], 0
    for m in _PARAM.finditer(template):
        parts.append(re.escape(template[last:m.start()]))
        parts.append(f"(?P<{m.group(1)}>[^/]+)")
        last = m.end()
    parts.append(re.escape(template[last:]))
    try:
        return re.compile("".join(parts))
    except re.error as exc:
        raise ConfigError(f"webhook route path {template!r}: {exc}") from None


def resume_route(path: str = DEFAULT_PATH, *, name: str = "runs", secrets: Optional[Sequence[str | bytes]] = None,
                 verifier: Optional[Verifier] = None) -> Route:
    """A route whose path names the run and the wait key (``{run_id}``, ``{wait_key}``); the
    body is the event's payload.

    Raises:
        ConfigError: the path lacks ``{run_id}`` or ``{wait_key}``, or the name is malformed.
    """
    route = Route(name, path, _from_path, secrets, verifier)
    if {"run_id", "wait_key"} - set(route.params):
        raise ConfigError(f"webhook route {name!r}: path {path!r} must name {{run_id}} and {{wait_key}}")
    return route


def _from_path(call: HookCall) -> Resume:
    return Resume(call.params["run_id"], call.params["wait_key"], call.body)


def start_route(path: str, workflow: str, *, name: str = "start",
                vars: Optional[Callable[[HookCall], dict[str, Any]]] = None,
                secrets: Optional[Sequence[str | bytes]] = None, verifier: Optional[Verifier] = None) -> Route:
    """A route that starts a run of ``workflow`` for each delivery (once per delivery id);
    its vars are the body, or what ``vars(call)`` returns.

    Raises:
        ConfigError: the name or path is malformed.
    """
    def resolve(call: HookCall) -> Start:
        return Start(workflow, vars(call) if vars is not None else call.body)

    return Route(name, path, resolve, secrets, verifier, workflow)


def derived_run_id(route: str, delivery_id: str) -> str:
    """The id of the run a start route makes for a delivery: the same on every retry, and
    never of the children's form (``sub-...``)."""
    return "wh-" + hashlib.sha256(f"{route}\0{delivery_id}".encode()).hexdigest()[:40]
