"""``/metrics``: Prometheus metrics of every reporting worker, and of the queues, in one scrape.

A worker on Heroku cannot be scraped; its reports reach the web process through Kafka
(:mod:`broker.ops.reporter`), which exposes them with Dramatiq's Prometheus metric names, one
series per process (label ``worker``; sum them in PromQL): ``dramatiq_messages_total``,
``dramatiq_message_errors_total``, ``dramatiq_message_retries_total``,
``dramatiq_message_rejects_total``, ``dramatiq_messages_inprogress`` and
``dramatiq_message_duration_milliseconds``.  Besides, read from Kafka at the scrape:
``kafka_tasks_consumer_lag`` per queue and partition, ``kafka_tasks_delayed_messages`` per queue
and tier, and ``kafka_tasks_dead_letters`` per queue.  Gone processes are left out; their counters
stop, as a restarted process's would.
"""

from __future__ import annotations

import time
from collections import Counter

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from .queues import QueueState
from .report import DURATION_BUCKETS_MS, WorkerReport

LABELS = ["queue_name", "actor_name", "worker"]


def worker_metrics(reports: list[WorkerReport]) -> list:
    """Dramatiq's metric families from the workers' last reports."""
    messages = CounterMetricFamily("dramatiq_messages", "The total number of messages processed.", labels=LABELS)
    errors = CounterMetricFamily("dramatiq_message_errors", "The total number of errored messages.", labels=LABELS)
    retries = CounterMetricFamily("dramatiq_message_retries", "The total number of retried messages.", labels=LABELS)
    rejects = CounterMetricFamily(
        "dramatiq_message_rejects", "The total number of dead-lettered messages.", labels=LABELS
    )
    inprogress = GaugeMetricFamily("dramatiq_messages_inprogress", "The number of messages in progress.", labels=LABELS)
    durations = HistogramMetricFamily(
        "dramatiq_message_duration_milliseconds", "The time spent processing messages.", labels=LABELS
    )
    for report in reports:
        running = Counter((m.queue, m.actor) for m in report.in_flight)
        for key, counters in sorted(report.counters.items()):
            queue, _, actor = key.partition("/")
            labels = [queue, actor, report.worker]
            messages.add_metric(labels, counters.processed)
            errors.add_metric(labels, counters.errors)
            retries.add_metric(labels, counters.retries)
            rejects.add_metric(labels, counters.rejects)
            cumulative, buckets = 0, []
            for bound, count in zip((*DURATION_BUCKETS_MS, float("inf")), counters.buckets):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else str(float(bound)), cumulative))
            durations.add_metric(labels, buckets, counters.duration_ms)
            inprogress.add_metric(labels, running.pop((queue, actor), 0))
        for (queue, actor), count in sorted(running.items()):
            inprogress.add_metric([queue, actor, report.worker], count)
    return [messages, errors, retries, rejects, inprogress, durations]


def queue_metrics(states: list[QueueState]) -> list:
    """Lag, delayed messages and dead letters, per queue."""
    lag = GaugeMetricFamily(
        "kafka_tasks_consumer_lag",
        "Messages of a queue's partition not yet processed.",
        labels=["queue_name", "partition"],
    )
    delayed = GaugeMetricFamily(
        "kafka_tasks_delayed_messages", "Delayed messages pending, per queue and tier.", labels=["queue_name", "tier"]
    )
    dead = GaugeMetricFamily(
        "kafka_tasks_dead_letters", "Records in a queue's dead-letter topic.", labels=["queue_name"]
    )
    for state in states:
        for partition in state.partitions:
            lag.add_metric([state.name, str(partition.partition)], partition.behind)
        for tier, pending in sorted(state.delayed.items()):
            delayed.add_metric([state.name, tier], pending)
        dead.add_metric([state.name], state.dead_letters)
    return [lag, delayed, dead]


class _Snapshot:
    """A collector of metric families gathered once, for one scrape."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)


def render_metrics(view) -> tuple[bytes, str]:
    """The Prometheus text of an :class:`~broker.ops.view.OpsView` now, and its content type."""
    live, _ = view.workers(int(time.time() * 1000))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(worker_metrics(live) + queue_metrics(view.queues())))
    return generate_latest(registry), CONTENT_TYPE_LATEST
