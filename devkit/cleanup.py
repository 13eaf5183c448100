"""Clean-up after a test, a soak or a bench: keys under a prefix, a queue's messages.

Everything here deletes only what it names (a prefix, a queue): never FLUSHDB, never
another test's keys.
"""

from __future__ import annotations

import json
from typing import Iterable

import redis


def delete_prefix(client: redis.Redis, prefix: str) -> int:
    """Delete every key under ``prefix`` (SCAN + UNLINK in batches); returns how many."""
    n, batch = 0, []
    for key in client.scan_iter(match=f"{prefix}*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            n += int(client.unlink(*batch))
            batch.clear()
    if batch:
        n += int(client.unlink(*batch))
    return n


def purge_queue(broker_url: str, queue: str) -> None:
    """Drop the queue's list and kombu's binding keys for it (nothing else in the db)."""
    client = redis.Redis.from_url(broker_url)
    keys = [queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"]
    keys += [k for k in client.scan_iter(match=f"{queue}\x06*", count=1000)]  # priority sub-queues
    client.delete(*keys)


def unacked_for(client: redis.Redis, queues: Iterable[str]) -> list[bytes]:
    """Delivery tags of messages kombu holds as unacked for ``queues`` (routing key = queue name)."""
    wanted = set(queues)
    tags = []
    for tag, raw in client.hscan_iter("unacked"):
        try:
            routing_key = json.loads(raw)[2]
        except (ValueError, IndexError, TypeError):
            continue
        if routing_key in wanted:
            tags.append(tag)
    return tags


def flush_broker(broker_url: str, queue: str) -> int:
    """Drop every message of ``queue``: its list(s) and its entries in kombu's ``unacked``
    hash and ``unacked_index`` zset (other tests' entries are left alone). Returns how many went."""
    client = redis.Redis.from_url(broker_url)
    dropped = 0
    for key in client.scan_iter(match=f"{queue}*"):
        if client.type(key) == b"list":
            dropped += int(client.llen(key))
            client.delete(key)
    tags = unacked_for(client, [queue])
    if tags:
        client.hdel("unacked", *tags)
        client.zrem("unacked_index", *tags)
        dropped += len(tags)
    return dropped


def cleanup_broker(broker_url: str, queue: str) -> None:
    """Remove everything this queue left in the broker DB (RabbitMQ: the queue and its exchange)."""
    if broker_url.startswith(("amqp://", "pyamqp://", "amqps://")):
        from kombu import Connection

        with Connection(broker_url, connect_timeout=5) as conn:
            channel = conn.default_channel
            channel.queue_delete(queue)
            channel.exchange_delete(queue)
        return
    flush_broker(broker_url, queue)
    client = redis.Redis.from_url(broker_url)
    for key in list(client.scan_iter(match=f"{queue}*")) + list(client.scan_iter(match=f"_kombu.binding*.{queue}")):
        client.delete(key)


def queue_len(broker_url: str, queue: str) -> int:
    client = redis.Redis.from_url(broker_url)
    return sum(int(client.llen(k)) for k in client.scan_iter(match=f"{queue}*") if client.type(k) == b"list")
