"""``OpsView``: what the operations pages, ``/metrics`` and ``kafka-tasks status`` show.

Queues are read from Kafka when asked (:mod:`broker.ops.queues`); workers from the ops topic,
which a thread of the process that shows them follows, keeping the last hour of reports in a
:class:`~broker.ops.report.Fleet` (started at first use: importing or building this starts
nothing); failures and tasks from the status store, when the application has one; schedules from
the clock topic.  Dead letters are listed and replayed with the functions ``kafka-tasks dlq`` uses.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from .. import dlq
from ..clientlog import ClientLog
from . import control
from .queues import QueueState, queue_state
from .report import GONE_AFTER, HISTORY, Fleet, WorkerReport
from .reporter import OPS_TOPIC

logger = logging.getLogger(__name__)

#: How long a first look waits for the ops topic's last hour to be read (s).
CATCH_UP_TIMEOUT = 5.0


class OpsView:
    """The state of an application's queues, workers, failures and schedules.

    Parameters:
      broker(KafkaBroker): The application's broker: its cluster and declared queues.
      store(TaskStore|None): Its status store, for failures and task lookups.
      schedules(Iterable[Schedule]): Its periodic tasks, if any.
      history(float): How far back the workers' reports go (s).
    """

    def __init__(self, broker, *, store=None, schedules=(), history: float = HISTORY) -> None:
        self.broker = broker
        self.store = store
        self.schedules = list(schedules)
        self.fleet = Fleet(history=history)
        self._lock = threading.Lock()
        self._follower: threading.Thread | None = None
        self._caught_up = threading.Event()
        self._stop = threading.Event()

    # Workers ------------------------------------------------------------------------------------

    def follow(self) -> None:
        """Starts following the ops topic (once per process), and waits until its last hour is read."""
        with self._lock:
            if self._follower is None or not self._follower.is_alive():
                self._follower = threading.Thread(target=self._follow, name="kafka-tasks-ops-view", daemon=True)
                self._follower.start()
        self._caught_up.wait(CATCH_UP_TIMEOUT)

    def close(self) -> None:
        """Stops following the ops topic (a daemon thread still in librdkafka at exit may crash it)."""
        self._stop.set()
        if self._follower is not None:
            self._follower.join(10)

    def _follow(self) -> None:
        broker = self.broker
        consumer = Consumer(
            {
                **broker.settings.client_config(),
                **ClientLog("ops follower").config(),
                "group.id": broker.settings.group("kafka-tasks.ops.view"),
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 200,
            }
        )
        topic = broker.settings.topic(OPS_TOPIC)
        try:
            since = int((time.time() - self.fleet.history) * 1000)
            partition = TopicPartition(topic, 0, since)
            while not self._stop.is_set():
                try:
                    [start] = consumer.offsets_for_times([partition], timeout=5)
                    _, end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=5, cached=False)
                    break
                except KafkaException as e:  # no such topic yet: no worker ever reported
                    logger.debug("Waiting for the ops topic: %s", e)
                    self._caught_up.set()
                    self._stop.wait(2)
            else:
                return
            consumer.assign([TopicPartition(topic, 0, start.offset if start.offset >= 0 else end)])
            if start.offset < 0 or start.offset >= end:
                self._caught_up.set()
            while not self._stop.is_set():
                for record in consumer.consume(500, timeout=0.5):
                    if record.error() is None and record.value():
                        try:
                            self.fleet.add(WorkerReport.decode(record.value()))
                        except (ValueError, KeyError, TypeError) as e:
                            logger.debug("Ignoring a record of %s that is no report: %s", topic, e)
                        if record.offset() >= end - 1:
                            self._caught_up.set()
                self.fleet.forget_before(int(time.time() * 1000))
        finally:
            consumer.close()

    def workers(self, now_ms: int | None = None) -> tuple[list[WorkerReport], list[WorkerReport]]:
        """The live and the gone processes, each by its last report."""
        self.follow()
        now_ms = now_ms or int(time.time() * 1000)
        return self.fleet.live(now_ms), self.fleet.gone(now_ms)

    # Queues -------------------------------------------------------------------------------------

    def queue_names(self) -> list[str]:
        return sorted(self.broker.queues)

    def queues(self) -> list[QueueState]:
        """Every declared queue's state, read from Kafka now."""
        paused = control.paused(control.Control(self.broker).read())
        return [queue_state(self.broker, name, paused=name in paused) for name in self.queue_names()]

    def queue(self, name: str) -> QueueState:
        paused = control.paused(control.Control(self.broker).read())
        return queue_state(self.broker, name, paused=name in paused)

    def pause(self, queue: str, *, paused: bool, by: str) -> control.QueueCommand:
        """Pauses or resumes a queue for every worker (see :mod:`broker.ops.control`)."""
        return control.Control(self.broker).command(queue, paused=paused, by=by)

    # Dead letters -------------------------------------------------------------------------------

    def dead_letters(self, queue: str) -> list[dlq.DeadLetter]:
        return dlq.list_dead_letters(self.broker, queue)

    def replay(self, queue: str, ids=None) -> dlq.ReplayResult:
        return dlq.replay(self.broker, queue, ids)

    # Tasks and schedules ------------------------------------------------------------------------

    def failures(self, limit: int = 20) -> list[dict]:
        """The latest failed and dead tasks, with their errors (empty without a status store)."""
        return [] if self.store is None else self.store.latest(("failed", "dead"), limit)

    def task(self, task_id: str) -> dict | None:
        return None if self.store is None else self.store.get_task(task_id)

    def schedule_rows(self) -> list[tuple[str, str, str, str]]:
        """Each schedule's name, timing, next tick and last tick, as ``kafka-tasks clock --list`` shows."""
        if not self.schedules:
            return []
        from ..clock import Clock

        clock = Clock(self.broker, self.schedules)
        return clock.listing(dt.datetime.now(dt.UTC), clock.read_state())

    # The whole picture --------------------------------------------------------------------------

    def snapshot(self) -> dict:
        """Queues and workers as JSON data (``kafka-tasks status --json``)."""
        now_ms = int(time.time() * 1000)
        live, gone = self.workers(now_ms)
        return {
            "at": dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).isoformat(),
            "queues": [state.as_dict() for state in self.queues()],
            "workers": {
                "live": [worker_summary(r, now_ms) for r in live],
                "gone": [worker_summary(r, now_ms) for r in gone],
            },
            "gone_after_s": GONE_AFTER,
        }


def worker_summary(report: WorkerReport, now_ms: int) -> dict:
    """A process as JSON data: who, what it consumes, how busy, and what it runs now."""
    return {
        "worker": report.worker,
        "dyno": report.dyno,
        "host": report.host,
        "pid": report.pid,
        "version": report.version,
        "queues": report.queues,
        "threads": report.threads,
        "busy": report.busy,
        "paused": report.paused,
        "processed": sum(c.processed for c in report.counters.values()),
        "failed": sum(c.errors for c in report.counters.values()),
        "last_report_s_ago": round((now_ms - report.reported_ms) / 1000, 1),
        "running": [
            {
                "message_id": m.message_id,
                "actor": m.actor,
                "queue": m.queue,
                "for_s": round((now_ms - m.started_ms) / 1000, 1),
            }
            for m in report.in_flight
        ],
    }
