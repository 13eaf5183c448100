"""Example Celery configuration for ``celery -A abstractruntime_celery worker -B``.

Celery loads this module when it is importable from the worker's working
directory. Every value can be overridden by the environment variable named
beside it; the README's settings table lists them all.
"""

import os

# Broker: Redis by default (RabbitMQ works too: amqp://guest:guest@127.0.0.1:5672//).
broker_url = os.environ.get("ABSTRACTRUNTIME_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")

# JSON only: pickle is never accepted (install() refuses an app that accepts it).
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

# A tick is idempotent under the run's lease, so late acks are safe and a
# killed pool child's tick comes back at once.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

# Timer ETAs stay under the timer horizon (5 min), far below these limits.
broker_transport_options = {"visibility_timeout": 3600}

# The driver's own settings (prefix abstractruntime_). The environment wins.
abstractruntime_store_url = os.environ.get("ABSTRACTRUNTIME_CELERY_STORE_URL", "redis://127.0.0.1:6379/1")  # as README, deploy/
abstractruntime_registry = os.environ.get("ABSTRACTRUNTIME_CELERY_REGISTRY", "")
abstractruntime_timer_horizon_s = 300.0
abstractruntime_sweep_interval_s = 15.0
