"""Integrations with web frameworks: ``contrib.django``, ``contrib.flask``, ``contrib.fastapi``.

Each gives a web process one ``ScheduledRuntime`` (built on the Celery app that ``install``
prepared, with its registry and settings) and a ``start_run`` that checks its input at once.
Each module imports its framework only when it is imported itself.
"""
