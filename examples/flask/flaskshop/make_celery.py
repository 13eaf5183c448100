"""What the worker runs: ``celery -A flaskshop.make_celery worker -Q abstractruntime -n w1@%h``.
It builds the Flask app, so the worker reads the same config as the web process."""

from flaskshop import arc, create_app

flask_app = create_app()
celery_app = arc.celery_for(flask_app)
