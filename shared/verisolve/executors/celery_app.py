"""The Celery application: queues, reliability settings, and the outbox's publisher.

Reliability (ARCHITECTURE.md, "Reliability rules"): late acks, prefetch 1, JSON only, no result
backend. A task whose worker dies is requeued (`task_reject_on_worker_lost`); a task that raises
is rejected without requeue, so on RabbitMQ it lands in the dead-letter queue. On RabbitMQ every
queue is a quorum queue with a delivery limit, after which a message is dead-lettered too (a
message that kills its worker every time stops there). Celery sees the quorum queues in
`task_queues` (`worker_detect_quorum_queues`) and switches to per-consumer QoS, which quorum
queues require.

Consumer timeout: RabbitMQ 3.12+ reads `x-consumer-timeout` from the queue; older brokers ignore
the argument and apply the server's `consumer_timeout` (30 minutes by default): raise it above
LONGEST_TASK_S in rabbitmq.conf there. On Redis the visibility timeout plays that role.
"""

from __future__ import annotations

from typing import Any

from amqp.exceptions import AMQPError, MessageNacked  # type: ignore[import-untyped]
from celery import Celery
from kombu import entity
from kombu.exceptions import KombuError
from sqlalchemy.engine import make_url

from verisolve.executors.outbox import PublishError
from verisolve.pipeline.routes import ROUTES, QueueName, physical_queue
from verisolve.settings import Settings, get_settings

LONGEST_TASK_S = 3600  # the hard time limit of one task
CONSUMER_TIMEOUT_S = LONGEST_TASK_S + 600  # the broker reclaims a message only after this
DELIVERY_LIMIT = 5  # deliveries of one message before it is dead-lettered
PREFIX_KEY = "verisolve_queue_prefix"  # our own key in the app's conf
# kombu's constructors are unannotated; typed as Any once, here.
Exchange: Any = entity.Exchange
Queue: Any = entity.Queue
BROKER_ERRORS = (KombuError, AMQPError, MessageNacked, OSError)
TASK_MODULES = ("services.generator.tasks", "services.verifier.tasks", "services.aggregator.tasks")


def _scheme(broker_url: str) -> str:
    return make_url(broker_url).drivername.split("+")[0]


def is_amqp(broker_url: str) -> bool:
    """Whether the broker speaks AMQP (RabbitMQ)."""
    return _scheme(broker_url) in ("amqp", "amqps", "pyamqp")


def dead_letter_queue(prefix: str) -> entity.Queue:
    """Where RabbitMQ puts failed and over-delivered messages, for inspection."""
    exchange = Exchange(f"{prefix}verisolve.dead", type="fanout", durable=True)
    queue: entity.Queue = Queue(
        f"{prefix}dead", exchange, durable=True, queue_arguments={"x-queue-type": "quorum"}
    )
    return queue


def task_queues(prefix: str, amqp: bool) -> list[entity.Queue]:
    """The three work queues, quorum queues on RabbitMQ."""
    # Topic, not direct: Celery's native delayed delivery (quorum queues) binds topic exchanges.
    exchange = Exchange(f"{prefix}verisolve", type="topic", durable=True)
    queues = []
    for queue in QueueName:
        name = physical_queue(queue, prefix)
        arguments: dict[str, Any] | None = None
        if amqp:
            arguments = {
                "x-queue-type": "quorum",
                "x-delivery-limit": DELIVERY_LIMIT,
                "x-dead-letter-exchange": dead_letter_queue(prefix).exchange.name,
                "x-consumer-timeout": CONSUMER_TIMEOUT_S * 1000,
            }
        queues.append(
            Queue(name, exchange, routing_key=name, durable=True, queue_arguments=arguments)
        )
    return queues


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery's settings for a deployment."""
    url, prefix = settings.broker_url, settings.queue_prefix
    amqp = is_amqp(url)
    # Publisher confirms: the relay marks a row sent only once RabbitMQ has the message.
    transport = {"confirm_publish": True} if amqp else {"visibility_timeout": CONSUMER_TIMEOUT_S}
    return {
        "broker_url": url,
        PREFIX_KEY: prefix,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": False,
        "task_time_limit": LONGEST_TASK_S,
        # A task running when the broker connection drops finishes and commits; its message comes
        # back and is a no-op. Cancelling it instead would throw its model time away.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_prefetch_multiplier": 1,
        "worker_detect_quorum_queues": True,
        "worker_send_task_events": False,
        "task_queues": task_queues(prefix, amqp),
        "task_default_queue": physical_queue(QueueName.AGGREGATE, prefix),
        "task_create_missing_queues": False,
        "task_routes": {
            route.task.value: {"queue": physical_queue(route.queue, prefix)}
            for route in ROUTES.values()
        },
    }


def make_app(settings: Settings | None = None) -> Celery:
    """A Celery app for a deployment; the settings are read when the app is first configured."""
    celery = Celery("verisolve", set_as_current=False)
    celery.add_defaults(lambda: celery_config(settings or get_settings()))
    return celery


# The workers' app: the task modules register on it, configured from the environment.
app = make_app()


def declare_topology(celery: Celery) -> None:
    """Declare the work queues (and the dead-letter queue on RabbitMQ) before anything is sent."""
    queues = list(celery.conf.task_queues)
    if is_amqp(celery.conf.broker_url):
        queues.append(dead_letter_queue(get_prefix(celery)))
    with celery.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in queues:
            queue(channel).declare()


def get_prefix(celery: Celery) -> str:
    """The queue prefix an app was configured with."""
    return str(celery.conf[PREFIX_KEY])


class CeleryPublisher:
    """The outbox's publisher on a Celery app (declares the queues on first use)."""

    def __init__(self, celery: Celery | None = None) -> None:
        self._app = celery or app
        self._declared = False

    def publish(self, task: str, queue: str, payload: dict[str, Any], message_id: str) -> None:
        """Send one task message, confirmed by the broker; raises PublishError."""
        try:
            if not self._declared:
                declare_topology(self._app)
                self._declared = True
            self._app.send_task(
                task,
                kwargs=payload,
                queue=physical_queue(queue, get_prefix(self._app)),
                task_id=message_id,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
            )
        except BROKER_ERRORS as exc:
            self._declared = False
            raise PublishError(str(exc) or type(exc).__name__) from exc

    def queue_stats(self, queue: str) -> tuple[int, int] | None:
        """(ready messages, consumers) of a logical queue; None when the broker cannot tell."""
        name = physical_queue(queue, get_prefix(self._app))
        try:
            with self._app.connection_for_read() as connection:
                declared = self._app.amqp.queues[name](connection.default_channel)
                _, messages, consumers = declared.queue_declare(passive=True)
                return int(messages), int(consumers)
        except (*BROKER_ERRORS, KeyError):
            return None

    def ready_messages(self, queue: str) -> int | None:
        """Messages waiting in a logical queue (None when the broker cannot tell)."""
        stats = self.queue_stats(queue)
        return None if stats is None else stats[0]
