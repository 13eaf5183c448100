"""The webhook receiver served by Flask and by Django in a real process, for the tests.

``python -m tests._webhook_servers flask:PORT django:PORT``: one process serving both
(each on its own werkzeug server and port; one heavy import instead of two). Settings, secrets and routes come
from ``ABSTRACTRUNTIME_CELERY_*`` (as ``abstractruntime-celery webhooks serve`` reads them).
Both run on werkzeug's threaded WSGI servers, so concurrent requests really overlap.
"""

from __future__ import annotations

import sys
from typing import Any

urlpatterns: list[Any] = []


def flask_app() -> Any:
    from flask import Flask

    from abstractruntime_celery.webhooks.flask import blueprint

    app = Flask("webhook-test")
    app.register_blueprint(blueprint())
    return app


def django_app() -> Any:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False, SECRET_KEY="test-only", ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__,
        MIDDLEWARE=["django.middleware.common.CommonMiddleware", "django.middleware.csrf.CsrfViewMiddleware"],
        INSTALLED_APPS=[], USE_TZ=True,
    )
    django.setup()
    from django.core.handlers.wsgi import WSGIHandler
    from django.urls import include, path

    urlpatterns.append(path("", include("abstractruntime_celery.webhooks.django")))
    from django.urls import get_resolver

    _ = get_resolver().url_patterns  # build the receiver now: a setup mistake stops the server
    return WSGIHandler()


def main(argv: list[str]) -> None:
    """Serve each ``kind:port`` of ``argv`` (``flask:8001 django:8002``) until killed."""
    import threading

    from werkzeug.serving import make_server

    servers = []
    for spec in argv:
        kind, _, port = spec.partition(":")
        app = flask_app() if kind == "flask" else django_app()
        servers.append(make_server("127.0.0.1", int(port), app, threaded=True))
        print(f"{kind} webhooks listening on {port}", flush=True)
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
