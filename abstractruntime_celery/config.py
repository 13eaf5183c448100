"""Settings: one prefix (``abstractruntime_``) on the Celery conf, read in one place.

Precedence, highest first: the environment (``ABSTRACTRUNTIME_CELERY_<NAME>``),
the Celery conf (``app.conf.abstractruntime_<name>``, which ``celeryconfig.py``
fills), then the defaults below. Every default is safe on one machine.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from .errors import ConfigError
from .redact import redact_url

ENV_PREFIX = "ABSTRACTRUNTIME_CELERY_"
CONF_PREFIX = "abstractruntime_"

#: Settings where ``inf`` means "never" (every other number must be finite; NaN never is).
MAY_BE_INF = frozenset({"unknown_workflow_grace_s"})
#: ``lost_tick_after_s`` when left at 0 (and ``timer_horizon_s`` is not larger).
LOST_TICK_AFTER_S = 300.0
#: The largest number of seconds a setting takes (about 31 years): a Redis time to live in
#: milliseconds, or a score bound, stays a 64-bit integer.
MAX_SECONDS = 1e9


@dataclass(frozen=True)
class Settings:
    """Everything the driver reads; see the README's settings table."""

    #: Where runs and ledgers live: ``memory://``, ``file:///dir``, ``sqlite:///path``, ``redis://...``.
    store_url: str = "memory://"
    #: Where leases, inboxes, timers and stats live. Empty: the store URL if it is
    #: Redis, else the broker URL if it is Redis, else in-process (embedded mode only).
    coord_url: str = ""
    #: ``pkg.mod:attr`` naming a WorkflowRegistry, a list of WorkflowSpecs, or a callable returning either.
    registry: str = ""
    #: ``pkg.mod:attr`` naming a callable that returns extra ``Runtime`` keyword arguments for
    #: workers (``effect_handlers``, ``artifact_store``, ``effect_policy``, ``config``, ...).
    runtime_options: str = ""
    #: Redis key prefix for everything this package writes.
    key_prefix: str = "arc:"
    #: Waits due within this many seconds get a broker ETA; later ones are left to the sweep.
    timer_horizon_s: float = 300.0
    #: How often beat runs the sweep.
    sweep_interval_s: float = 15.0
    #: At most this many runs per sweep pass (due timers, orphans, parents each).
    sweep_batch: int = 1000
    #: Seconds a run that ended (completed, failed, cancelled) is kept, with its ledger and
    #: notes, before the sweep deletes it (a parent waits for its last child). 0: for ever.
    retention_s: float = 604800.0
    #: Per-run lease time to live; renewed every third of it while a tick runs.
    lease_ttl_s: float = 30.0
    #: A RUNNING run untouched this long with no live lease is an orphan: the sweep re-ticks it.
    orphan_grace_s: float = 60.0
    #: An inbox event not applied this long after acceptance gets its message sent again.
    event_redeliver_s: float = 30.0
    #: Largest accepted event payload or start vars, in bytes of JSON.
    max_payload_bytes: int = 256 * 1024
    #: Node executions per tick before the run is re-enqueued (fairness).
    tick_max_steps: int = 100
    #: Consecutive failing ticks before the run is marked FAILED.
    tick_max_attempts: int = 5
    #: Seconds a run may name an unregistered workflow before it is marked FAILED.
    unknown_workflow_grace_s: float = 86400.0
    #: Seconds a tick trusts the cancel/pause state it last confirmed, instead of reading it
    #: before every node (Redis store; its saves check the state anyway). 0: always read.
    control_ttl_s: float = 0.25
    #: Queue for tick/resume/start tasks.
    queue: str = "abstractruntime"
    #: RabbitMQ type of that queue when ``install`` declares it: "classic", "quorum" (then
    #: with a topic exchange, so Celery's native delayed delivery carries timer ETAs), or ""
    #: (follow Celery's ``task_default_queue_type``).
    queue_type: str = ""
    #: Which waits an event may answer. "strict": only EVENT, USER and JOB waits, and only
    #: under their exact key (a key must be given). "seed": as the seed, a key of None answers
    #: any wait (a timer, a child). "auto": strict on a fleet, seed in the embedded mode.
    wait_key_mode: str = "auto"
    #: Longest wait key accepted, in bytes of UTF-8.
    max_wait_key_bytes: int = 1024
    #: Most unapplied events one run's inbox holds.
    max_inbox_events: int = 100
    #: Most payload bytes one run's inbox holds.
    max_inbox_bytes: int = 1024 * 1024
    #: Failing ticks are retried after factor * 2**(attempt-1) seconds, capped, with jitter.
    retry_backoff_s: float = 0.5
    retry_backoff_max_s: float = 60.0
    retry_jitter: bool = True
    #: How long pause/resume/cancel wait for a tick's lease (stores without compare-and-set).
    control_timeout_s: float = 30.0
    #: A run's queued tick not delivered this long after it was sent is taken for lost (the
    #: sweep sends another); a beat sweep waits this long at most behind the ticks of its queue.
    #: Keep it above the longest queue wait you expect: under it, a run has one pending tick.
    #: 0: the larger of 300 s and ``timer_horizon_s``.
    lost_tick_after_s: float = 0.0
    #: Webhooks (``abstractruntime_celery.webhooks``): the Standard Webhooks signing secrets
    #: (``whsec_<base64>``), separated by spaces or commas; several while one is rotated out.
    #: Never shown in the settings' repr.
    webhook_secrets: str = field(default="", repr=False)
    #: ``pkg.mod:attr`` naming the webhook routes (a list of ``Route``s, or a callable returning one).
    #: Empty: the one route ``/hooks/runs/{run_id}/{wait_key}``.
    webhook_routes: str = ""
    #: Largest webhook request body accepted (bytes); a larger one is answered 413 unread.
    webhook_max_body_bytes: int = 256 * 1024
    #: Replay window: a webhook whose ``webhook-timestamp`` is further than this from now is refused.
    webhook_tolerance_s: float = 300.0
    #: How long a webhook id is remembered: a delivery repeated within it is answered, not stored again.
    webhook_dedupe_s: float = 7 * 86400.0
    #: A worker serves the cluster's Prometheus metrics on this port (its main process, once;
    #: ``metrics/serve.py``). 0: no endpoint.
    metrics_port: int = 0
    #: The address the metrics endpoint listens on (``0.0.0.0``: every interface).
    metrics_addr: str = "127.0.0.1"
    #: OpenTelemetry spans per tick and per node, joined to each run's trace (``tracing.py``;
    #: needs the ``otel`` extra).
    tracing: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value, kind = getattr(self, f.name), type(f.default)
            ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
            if kind is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok:
                shown = redact_url(repr(value)) if f.name.endswith("_url") else repr(value)
                raise ConfigError(f"Setting {f.name} expects {kind.__name__}, got {type(value).__name__} {shown:.80}")
        for f in fields(self):
            value = getattr(self, f.name)
            if type(f.default) is float and not (abs(value) <= MAX_SECONDS or (value == math.inf and f.name in MAY_BE_INF)):
                raise ConfigError(f"Setting {f.name} must be a finite number of seconds up to {MAX_SECONDS:g} "
                                  f"(Redis time-to-live limits), got {value!r}")
        if not self.key_prefix or not self.queue:
            raise ConfigError("key_prefix and queue must not be empty")
        if self.timer_horizon_s <= 0 or self.sweep_interval_s <= 0 or self.lease_ttl_s <= 0:
            raise ConfigError("timer_horizon_s, sweep_interval_s and lease_ttl_s must be > 0")
        negative = [name for name in ("control_ttl_s", "orphan_grace_s", "event_redeliver_s",
                                      "unknown_workflow_grace_s", "lost_tick_after_s", "retention_s") if getattr(self, name) < 0]
        if negative:
            raise ConfigError(f"{', '.join(negative)} must be >= 0")
        if self.max_payload_bytes <= 0 or self.tick_max_steps <= 0 or self.sweep_batch <= 0:
            raise ConfigError("max_payload_bytes, tick_max_steps and sweep_batch must be > 0")
        if self.queue_type not in ("", "classic", "quorum"):
            raise ConfigError(f"queue_type must be classic or quorum (or empty), got {self.queue_type!r:.80}")
        if self.wait_key_mode not in ("auto", "strict", "seed"):
            raise ConfigError(f"wait_key_mode must be auto, strict or seed, got {self.wait_key_mode!r}")
        if min(self.max_wait_key_bytes, self.max_inbox_events, self.max_inbox_bytes) <= 0:
            raise ConfigError("max_wait_key_bytes, max_inbox_events and max_inbox_bytes must be > 0")
        if self.retry_backoff_s < 0 or self.retry_backoff_max_s < 0 or self.control_timeout_s <= 0:
            raise ConfigError("retry_backoff_s and retry_backoff_max_s must be >= 0, control_timeout_s > 0")
        if self.webhook_max_body_bytes <= 0 or self.webhook_tolerance_s <= 0 \
                or self.webhook_dedupe_s < 2 * self.webhook_tolerance_s:
            raise ConfigError("webhook_max_body_bytes and webhook_tolerance_s must be > 0, and webhook_dedupe_s at "
                              "least twice webhook_tolerance_s (a replay inside the window must still be known)")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port must be a TCP port (1-65535) or 0 (no endpoint), got {self.metrics_port}")
        if self.lost_tick_after_s == 0:
            object.__setattr__(self, "lost_tick_after_s", max(LOST_TICK_AFTER_S, self.timer_horizon_s))
        if self.lost_tick_after_s < self.timer_horizon_s:
            raise ConfigError(f"lost_tick_after_s={self.lost_tick_after_s:g} is under timer_horizon_s="
                              f"{self.timer_horizon_s:g}: a retry or timer sent that far ahead would be taken "
                              "for lost before it is due")

    def resolved_coord_url(self, broker_url: str | None = None) -> str:
        """The URL of the coordination Redis, or ``memory://`` for the embedded mode.

        Raises:
            ConfigError: ``coord_url`` is set but is not a Redis URL (quoted with its
                password masked: Celery logs this message with every task).
        """
        for url in (self.coord_url, self.store_url, broker_url or ""):
            if url.startswith(("redis://", "rediss://", "unix://")):
                return url
            if url == self.coord_url and url:
                raise ConfigError(f"abstractruntime_coord_url must be a Redis URL, got {redact_url(url)!r}")
        return "memory://"


def _coerce(name: str, raw: Any, default: Any) -> Any:
    if isinstance(raw, type(default)) and not isinstance(raw, bool):
        return raw
    try:
        if isinstance(default, bool):
            word = str(raw).strip().lower()
            if word not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(word)
            return word in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Setting {name} expects {type(default).__name__}, got {raw!r}") from exc


def load_settings(conf: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                  **overrides: Any) -> Settings:
    """Build Settings from a Celery conf mapping, the environment and keyword overrides.

    Raises:
        ConfigError: a value cannot be converted, or is out of range.
    """
    env = os.environ if env is None else env
    base = Settings()
    values: dict[str, Any] = {}
    for f in fields(Settings):
        default = getattr(base, f.name)
        raw: Any = None
        if conf is not None:
            try:
                raw = conf.get(CONF_PREFIX + f.name)
            except Exception:  # Celery conf raises on some unknown keys in strict mode
                raw = None
        env_raw = env.get(ENV_PREFIX + f.name.upper())
        if env_raw not in (None, ""):
            raw = env_raw
        if f.name in overrides and overrides[f.name] is not None:
            raw = overrides[f.name]
        if raw is not None:
            values[f.name] = _coerce(f.name, raw, default)
    return replace(base, **values)
