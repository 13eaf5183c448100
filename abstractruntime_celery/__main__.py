"""``python -m abstractruntime_celery demo``."""

from .cli import run

run()
