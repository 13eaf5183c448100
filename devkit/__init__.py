"""Helpers shared by ``tests/``, ``soak/`` and ``bench/`` (not shipped with the package):
real Celery processes (``procs``), private redis-server processes (``redisproc``), and
clean-up of keys and queues (``cleanup``)."""
