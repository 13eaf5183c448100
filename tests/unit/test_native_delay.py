"""RabbitMQ quorum queues, without a broker: whole-second countdowns for native delayed
delivery, and the queue ``install`` declares for each ``queue_type``."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from celery import Celery

from abstractruntime_celery import ConfigError, Settings, install
from abstractruntime_celery.dispatch import uses_native_delayed_delivery, whole_seconds

NOW = 1_800_000_000.0


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(NOW + seconds, tz=timezone.utc)


@pytest.mark.parametrize("ahead, timer, retry", [
    (0.2, None, 1), (0.999, None, 1), (1.0, 1, 1), (1.5, 1, 2), (2.999, 2, 3), (60.0, 60, 60), (-1.0, None, None),
])
def test_countdowns_are_whole_seconds_and_never_under_one(ahead: float, timer: int | None, retry: int | None) -> None:
    # A timer rounds down (one that arrives early is armed again, the worker waits out the
    # last second); a retry rounds up (one that arrives early would only be sent again).
    assert whole_seconds(at(ahead), "timer", now=NOW) == timer
    assert whole_seconds(at(ahead), "retry", now=NOW) == retry


def _queues(settings: Settings, **conf: object) -> dict[str, object]:
    app = Celery("q", broker="amqp://guest:guest@127.0.0.1:5672//", set_as_current=False)
    app.conf.update(conf)
    install(app, settings=settings)
    return {q.name: q for q in app.conf.task_queues}


def test_a_quorum_queue_gets_a_topic_exchange_for_native_delayed_delivery() -> None:
    queue = _queues(Settings(queue="arc", queue_type="quorum"))["arc"]
    assert queue.queue_arguments == {"x-queue-type": "quorum"} and queue.exchange.type == "topic"


def test_celerys_default_queue_type_is_followed_unless_the_setting_says_otherwise() -> None:
    queues = _queues(Settings(queue="arc"), task_default_queue_type="quorum")
    assert queues["arc"].queue_arguments == {"x-queue-type": "quorum"} and queues["arc"].exchange.type == "topic"
    assert queues["celery"].queue_arguments == {"x-queue-type": "quorum"}
    queues = _queues(Settings(queue="arc", queue_type="classic"), task_default_queue_type="quorum")
    assert not queues["arc"].queue_arguments and queues["arc"].exchange.type == "direct"


def test_classic_by_default_with_a_direct_exchange() -> None:
    queue = _queues(Settings(queue="arc"))["arc"]
    assert not queue.queue_arguments and queue.exchange.type == "direct"


def test_native_delayed_delivery_is_detected_from_the_queue_we_declare() -> None:
    app = Celery("q", broker="amqp://guest:guest@127.0.0.1:5672//", set_as_current=False)
    install(app, settings=Settings(queue="arc", queue_type="quorum"))
    assert uses_native_delayed_delivery(app)


def test_an_unknown_queue_type_is_refused() -> None:
    with pytest.raises(ConfigError, match="queue_type must be classic or quorum"):
        Settings(queue_type="stream")


def test_a_quorum_queue_named_with_a_dot_is_refused_at_install() -> None:
    """kombu binds each quorum queue's exchange with '#.<queue>': a delayed tick for
    'app.ticks' would also reach a queue named 'ticks' in the same vhost."""
    import pytest
    from celery import Celery

    from abstractruntime_celery import Settings
    from abstractruntime_celery.errors import ConfigError
    from abstractruntime_celery.tasks import install

    for name, ok in (("app.ticks", False), ("app-ticks", True)):
        app = Celery(f"dots-{name}", broker="memory://", set_as_current=False)
        settings = Settings(store_url="memory://", queue=name, queue_type="quorum")
        if ok:
            install(app, registry=[], settings=settings)
        else:
            with pytest.raises(ConfigError, match="dot"):
                install(app, registry=[], settings=settings)
