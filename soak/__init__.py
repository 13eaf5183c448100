"""Chaos soak of abstractruntime_celery: ``python -m soak`` (2,000 runs) or ``python -m soak --short``
(200 runs, CI). See ``soak/harness.py`` for what it does and what it checks."""
