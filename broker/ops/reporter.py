"""``OpsReporter``: a worker process's reports, and its obedience to pause commands, over Kafka.

On Heroku only ``web`` dynos receive HTTP: a worker cannot be scraped or browsed, so its state
travels through Kafka.  In a worker process (from ``after_worker_boot`` to
``before_worker_shutdown``; web processes that only send report nothing), a thread of this
middleware:

* publishes a :class:`~broker.ops.report.WorkerReport` every :data:`REPORT_INTERVAL` seconds to
  the ops topic (``kafka-tasks.ops``, one partition, kept an hour), and a last one saying it stops;
* follows the control topic (:mod:`broker.ops.control`) and pauses or resumes its broker's queues.

The hooks on the message path only count, under one lock: the cost is measured in ``make bench``
(the no-op worker with and without reporting).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import dramatiq
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from dramatiq.common import current_millis

from ..clientlog import ClientLog
from ..producer import Record
from ..topics import TopicSpec, ensure_topics
from . import control
from .report import REPORT_INTERVAL, ActorCounters, InFlight, WorkerReport, counter_key

logger = logging.getLogger(__name__)

#: The ops topic (``KAFKA_PREFIX`` in front): every worker's reports.
OPS_TOPIC = "kafka-tasks.ops"

#: How long the ops topic keeps reports (ms): the dashboard's plots show the last hour.
OPS_RETENTION_MS = 3_600_000


def ops_topic_spec(broker) -> TopicSpec:
    """The ops topic: one partition (reports are few and small), kept an hour."""
    return TopicSpec(
        broker.settings.topic(OPS_TOPIC),
        1,
        broker.replication_factor,
        {"retention.ms": str(OPS_RETENTION_MS), "segment.ms": str(OPS_RETENTION_MS // 4)},
    )


def version() -> str:
    """The installed kafka-tasks version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("kafka-tasks")
    except PackageNotFoundError:
        return "unknown"


class OpsReporter(dramatiq.Middleware):
    """Reports a worker process's state to the ops topic, and applies pause commands.

    Parameters:
      interval(float): Seconds between reports.
    """

    def __init__(self, *, interval: float = REPORT_INTERVAL) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._counters: dict[str, ActorCounters] = {}
        self._in_flight: dict[str, InFlight] = {}
        self._worker = None
        self._broker = None
        self._started_ms = current_millis()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # The message path: counting only -----------------------------------------------------------

    def _counter(self, message) -> ActorCounters:
        key = counter_key(message.queue_name, message.actor_name)
        counters = self._counters.get(key)
        if counters is None:
            counters = self._counters[key] = ActorCounters()
        return counters

    def before_process_message(self, broker, message):
        with self._lock:
            self._in_flight[message.message_id] = InFlight(
                message.message_id, message.actor_name, message.queue_name, current_millis()
            )

    def after_process_message(self, broker, message, *, result=None, exception=None):
        now = current_millis()
        with self._lock:
            running = self._in_flight.pop(message.message_id, None)
            counters = self._counter(message)
            counters.observe(now - running.started_ms if running is not None else 0)
            if exception is not None:
                counters.errors += 1

    def after_skip_message(self, broker, message):
        with self._lock:
            self._in_flight.pop(message.message_id, None)

    def after_nack(self, broker, message):
        with self._lock:
            self._counter(message).rejects += 1

    def after_enqueue(self, broker, message, delay):
        if "retries" in message.options and self._worker is not None:
            with self._lock:
                self._counter(message).retries += 1

    # The process: a thread from boot to shutdown ------------------------------------------------

    def after_worker_boot(self, broker, worker):
        if not hasattr(broker, "producer"):  # Dramatiq's other brokers have no Kafka to report to
            return
        self._broker, self._worker = broker, worker
        self._started_ms = current_millis()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kafka-tasks-ops", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker, worker):
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(10)
        self._thread = None
        try:
            self._send(self.report(stopping=True))
        except Exception as e:  # a last report is a courtesy: the dashboard shows it gone later anyway
            logger.warning("Could not send this process's last ops report: %s", e)

    def report(self, *, stopping: bool = False) -> WorkerReport:
        """This process's report, now."""
        broker, worker = self._broker, self._worker
        dyno = os.environ.get("DYNO")
        host = socket.gethostname()
        with self._lock:
            in_flight = list(self._in_flight.values())
            counters = {key: ActorCounters(**vars(value)) for key, value in self._counters.items()}
        for counter in counters.values():
            counter.buckets = list(counter.buckets)
        queues = sorted(getattr(worker, "consumer_whitelist", None) or broker.get_declared_queues())
        lag: dict[str, dict[int, int]] = {}
        for thread in list(getattr(worker, "consumers", {}).values()):
            consumer = getattr(thread, "consumer", None)
            for (topic, partition), behind in dict(getattr(consumer, "lag", {}) or {}).items():
                lag.setdefault(getattr(consumer, "queue_name", topic), {})[partition] = behind
        return WorkerReport(
            worker=f"{dyno or host}:{os.getpid()}",
            dyno=dyno,
            host=host,
            pid=os.getpid(),
            version=version(),
            started_ms=self._started_ms,
            reported_ms=current_millis(),
            queues=queues,
            threads=getattr(worker, "worker_threads", 0),
            in_flight=in_flight,
            counters=counters,
            lag=lag,
            paused=sorted(broker.paused_queues & set(queues)),
            stopping=stopping,
        )

    def _send(self, report: WorkerReport) -> None:
        topic = self._broker.settings.topic(OPS_TOPIC)
        self._broker.producer.send(Record(topic, report.encode(), key=report.worker.encode(), partition=0))

    def _run(self) -> None:
        broker = self._broker
        try:
            ensure_topics(broker.admin, [ops_topic_spec(broker), control.Control(broker).topic_spec()])
        except Exception as e:
            logger.warning("Could not ensure the ops topics (reports may fail): %s", e)
        commands: dict[str, control.QueueCommand] = {}
        follower = self._follow_control(broker)
        next_report = time.monotonic()
        while not self._stop.is_set():
            if follower is not None:
                try:
                    records = follower.consume(100, timeout=min(0.5, max(0.0, next_report - time.monotonic())))
                    broker.set_paused(control.paused(control.fold(commands, records)))
                except KafkaException as e:
                    logger.debug("Could not read the control topic: %s", e)
            else:
                self._stop.wait(max(0.0, next_report - time.monotonic()))
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + self.interval
                try:
                    self._send(self.report())
                except Exception as e:
                    logger.debug("Could not send an ops report: %s", e)
        if follower is not None:
            follower.close()

    def _follow_control(self, broker) -> Consumer | None:
        """An assigned reader of the control topic, from its start (no group, nothing committed)."""
        try:
            follower = Consumer(
                {
                    **broker.settings.client_config(),
                    **ClientLog("control follower").config(),
                    "group.id": broker.settings.group("kafka-tasks.control.follower"),
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": 100,
                }
            )
            follower.assign([TopicPartition(broker.settings.topic(control.CONTROL_TOPIC), 0, OFFSET_BEGINNING)])
            return follower
        except KafkaException as e:
            logger.warning("Could not follow the control topic (pause commands are not obeyed): %s", e)
            return None
