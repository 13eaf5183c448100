"""Prometheus metrics of the cluster: histograms the tick records (``histograms.py``),
the collector that reads them and the counters and indexes at scrape time
(``collector.py``), and the HTTP endpoint (``serve.py``: a worker setting or the
``abstractruntime-celery metrics serve`` command).

Everything is kept in Redis, so what a prefork child observes reaches the endpoint
of any process: no multiprocess mode, no per-process files.
"""
