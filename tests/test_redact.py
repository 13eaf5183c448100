"""Passwords never reach an exception message, a log line or the console: ``redact_url``
on many shapes of URL, and every error that quotes a store, coordination or Redis URL."""

from __future__ import annotations

import socket
from urllib.parse import quote

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from abstractruntime_celery import ConfigError, Settings, StoreUnavailableError
from abstractruntime_celery.redact import redact_url
from abstractruntime_celery.stores import open_stores
from abstractruntime_celery.stores.redis.connection import connect, describe, redis_errors, unavailable

SECRET = "hunter2"


@pytest.mark.parametrize("url,shown", [
    ("redis://alice:hunter2@db.example:6380/7", "redis://alice:***@db.example:6380/7"),
    ("redis://:hunter2@127.0.0.1:6379/9", "redis://:***@127.0.0.1:6379/9"),
    ("redis://hunter2@127.0.0.1:6379/9", "redis://***@127.0.0.1:6379/9"),
    ("rediss://u:hunter2@h:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem",
     "rediss://u:***@h:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem"),
    ("unix://:hunter2@/run/redis.sock?db=3", "unix://:***@/run/redis.sock?db=3"),
    ("amqp://guest:hunter2@rabbit:5672//", "amqp://guest:***@rabbit:5672//"),
    ("redis://h/0?password=hunter2&db=1", "redis://h/0?password=***&db=1"),
    ("redis://h/0?ssl_password=hunter2;token=hunter2", "redis://h/0?ssl_password=***;token=***"),
    ("redis://u:hun/ter@2@h/0", "redis://u:***@h/0"),              # '/' and '@' in the password
    ("redis://u:hun#ter?2@h/0", "redis://u:***@h/0"),              # '#' and '?' in it
    ("redis://u:hunter2@h/0?ssl_ca_certs=/a@b/ca.pem", "redis://u:***@h/0?ssl_ca_certs=/a@b/ca.pem"),
    ("redis://h/0?ssl_ca_certs=/a@b/ca.pem", "redis://h/0?ssl_ca_certs=/a@b/ca.pem"),
    ("u:hunter2@h", "u:***@h"),                                    # no scheme
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://@h/0", "redis://@h/0"),
    ("memory://", "memory://"),
    ("sqlite:///var/runs.db", "sqlite:///var/runs.db"),
    ("", ""),
    ("redis://[::1", "redis://[::1"),
])
def test_redact_url_masks_the_password_and_keeps_the_rest(url: str, shown: str) -> None:
    assert redact_url(url) == shown


_plain = st.text(st.sampled_from("abcxyz0189-_."), min_size=1, max_size=8)

def _raw(without: str) -> st.SearchStrategy[str]:
    return st.text(st.characters(blacklist_characters=without, blacklist_categories=("Cs",)), min_size=1)


#: Passwords as people write them, unencoded, and percent-encoded from any text. Unencoded, a
#: '?' and a later '=' together read as a query (so the URL is ambiguous): one or the other.
_password = st.one_of(_raw("?"), _raw("="), st.text(min_size=1).map(lambda s: quote(s, safe="")))


@given(scheme=st.sampled_from(["redis", "rediss", "unix", "bogus", "amqp"]),
       user=st.one_of(st.just(""), _plain), password=_password, host=_plain,
       port=st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}")),
       path=st.sampled_from(["", "/", "/0", "/15", "//"]),
       query=st.lists(st.tuples(st.sampled_from(["db", "ssl_cert_reqs", "password", "ssl_password"]), _plain),
                      max_size=3))
def test_redact_url_shows_everything_but_secrets(scheme: str, user: str, password: str, host: str, port: str,
                                                 path: str, query: list[tuple[str, str]]) -> None:
    def q(masked: bool) -> str:
        pairs = [f"{k}={'***' if masked and 'pass' in k else v}" for k, v in query]
        return "?" + "&".join(pairs) if pairs else ""

    url = f"{scheme}://{user}:{password}@{host}{port}{path}{q(False)}"
    assert redact_url(url) == f"{scheme}://{user}:***@{host}{port}{path}{q(True)}"


@given(st.text())
def test_redact_url_never_raises_and_is_idempotent(text: str) -> None:
    once = redact_url(text)
    assert isinstance(once, str) and redact_url(once) == once


def test_redact_url_takes_garbage() -> None:
    assert redact_url(None) == "None"  # type: ignore[arg-type]
    assert redact_url(b"redis://:hunter2@h") == "b'redis://:***@h'"  # type: ignore[arg-type]


# --- every error that quotes a URL ------------------------------------------------------------

@pytest.mark.parametrize("url", ["bogus://user:hunter2@h/0", "file://:hunter2@h/"])
def test_store_url_errors_mask_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_stores(url, prefix="p:", still_ours=lambda k, t: True)
    assert SECRET not in str(info.value) and "***" in str(info.value)


@pytest.mark.parametrize("url", ["http://:hunter2@h/0", "redis:/:hunter2@h/0", "sqlite://user:hunter2@x/db"])
def test_malformed_coord_url_error_masks_the_password(url: str) -> None:
    with pytest.raises(ConfigError, match="coord_url") as info:
        Settings(coord_url=url).resolved_coord_url()
    assert SECRET not in str(info.value)


def test_a_url_setting_of_the_wrong_type_is_not_echoed() -> None:
    with pytest.raises(ConfigError, match="store_url") as info:
        Settings(store_url=b"redis://:hunter2@h/0")  # type: ignore[arg-type]
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("url", ["redis://:hunt/er2@h/0", "redis://:hunter2@h:port/0", "redis://:hunter2@h/0?db=x"])
def test_malformed_redis_url_errors_mask_the_password(url: str) -> None:
    """redis-py's own message can quote a piece of the password ('hunt' here)."""
    with pytest.raises(ConfigError) as info:
        connect(url)
    text = str(info.value)
    assert "hunt" not in text and "er2" not in text and info.value.__cause__ is None, text
    assert info.value.__suppress_context__


def test_unreachable_redis_error_names_host_and_port_not_the_password() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens on it once closed
    client = connect(f"redis://alice:{SECRET}@127.0.0.1:{port}/0")
    assert describe(client) == f"127.0.0.1:{port}"
    with pytest.raises(StoreUnavailableError) as info:
        with redis_errors(client):
            client.ping()
    assert f"127.0.0.1:{port}" in str(info.value) and SECRET not in str(info.value)
    echoed = unavailable(client, redis.ConnectionError(f"AUTH alice {SECRET} refused"))  # if it ever did
    assert SECRET not in str(echoed)
