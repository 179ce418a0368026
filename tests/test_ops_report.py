"""broker.ops.report, broker.ops.text and broker.ops.metrics: reports and what they add up to (pure)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from broker.ops.metrics import queue_metrics, worker_metrics
from broker.ops.queues import QueueState
from broker.ops.report import GONE_AFTER, ActorCounters, Fleet, InFlight, WorkerReport, counter_key
from broker.ops.text import render
from broker.reading import PartitionOffsets


def report(worker="auth.1:10", at_ms=1_000_000, processed=0, **fields) -> WorkerReport:
    counters = {counter_key("auth", "create_user"): ActorCounters(processed=processed)}
    return WorkerReport(
        worker=worker,
        dyno="auth.1",
        host="h",
        pid=10,
        version="0.1.0",
        started_ms=0,
        reported_ms=at_ms,
        queues=["auth"],
        threads=8,
        counters=counters,
        **fields,
    )


def test_a_report_survives_its_trip_through_kafka():
    sent = report(
        in_flight=[InFlight("m1", "create_user", "auth", 999_000)], lag={"auth": {0: 3, 2: 1}}, paused=["auth"]
    )
    assert WorkerReport.decode(sent.encode()) == sent


def test_a_run_is_counted_in_its_duration_bucket():
    counters = ActorCounters()
    counters.observe(7)
    counters.observe(10)
    counters.observe(10**9)
    assert (counters.processed, counters.buckets[1], counters.buckets[-1], counters.duration_ms) == (
        3,
        2,
        1,
        10**9 + 17,
    )


def test_a_process_that_stops_reporting_is_gone_after_a_bounded_time():
    fleet = Fleet()
    fleet.add(report(at_ms=1_000_000))
    assert [r.worker for r in fleet.live(1_000_000 + GONE_AFTER * 1000)] == ["auth.1:10"]
    assert [r.worker for r in fleet.gone(1_000_000 + GONE_AFTER * 1000 + 1)] == ["auth.1:10"]


def test_a_process_that_says_it_stops_is_gone_at_once():
    fleet = Fleet()
    fleet.add(report(at_ms=1_000_000, stopping=True))
    assert fleet.live(1_000_001) == [] and len(fleet.gone(1_000_001)) == 1


def test_an_older_report_does_not_replace_a_newer_one():
    fleet = Fleet()
    fleet.add(report(at_ms=2_000_000, processed=5))
    fleet.add(report(at_ms=1_000_000, processed=1))
    assert fleet.latest()[0].counters["auth/create_user"].processed == 5


def test_throughput_is_summed_over_processes_per_bin():
    fleet = Fleet()
    # Two processes, each 50 more messages every 5 s (10 msg/s each), over the whole bin and around it
    for worker in ("a:1", "b:2"):
        for step in range(9):
            fleet.add(report(worker=worker, at_ms=3_595_000 + step * 5_000, processed=step * 50))
    series = dict(fleet.throughput("auth", 3_640_000, step=30))
    assert series[3_600.0] == 20.0
    assert series[3_570.0] is None  # no process reported then


def test_lag_is_the_sum_of_each_processes_last_report_in_a_bin():
    fleet = Fleet()
    fleet.add(report(worker="a:1", at_ms=3_600_000, lag={"auth": {0: 5}}))
    fleet.add(report(worker="a:1", at_ms=3_605_000, lag={"auth": {0: 2}}))
    fleet.add(report(worker="b:2", at_ms=3_606_000, lag={"auth": {1: 4}}))
    assert dict(fleet.lag("auth", 3_620_000, step=30))[3_600.0] == 6


def test_reports_older_than_the_history_are_forgotten():
    fleet = Fleet(history=60)
    fleet.add(report(at_ms=1_000_000))
    fleet.forget_before(1_000_000 + 61_000)
    assert fleet.latest() == []


def test_the_status_text_shows_queues_and_live_workers():
    snapshot = {
        "at": "2026-12-07T12:00:00+00:00",
        "queues": [{"queue": "auth", "waiting": 12, "delayed": 3, "dead_letters": 1, "paused": True}],
        "workers": {
            "live": [
                {
                    "worker": "auth.1:10",
                    "queues": ["auth"],
                    "busy": 1,
                    "threads": 8,
                    "processed": 40,
                    "failed": 2,
                    "running": [{"actor": "create_user", "for_s": 3.0}],
                    "last_report_s_ago": 1.0,
                }
            ],
            "gone": [],
        },
        "gone_after_s": 15.0,
    }
    lines = render(snapshot).splitlines()
    assert lines[2].split() == ["QUEUE", "WAITING", "DELAYED", "DEAD", "WORKERS", "STATE"]
    assert lines[3].split() == ["auth", "12", "3", "1", "1", "paused"]
    assert "create_user (3 s)" in lines[6] and lines[-1].startswith("1 live, 0 gone")


def test_metrics_carry_dramatiqs_names_per_process_and_the_queues_lag():
    counters = ActorCounters(processed=5, errors=1, retries=2, rejects=1)
    counters.observe(30)
    live = [report(worker="auth.1:10", in_flight=[InFlight("m", "create_user", "auth", 0)])]
    live[0].counters = {"auth/create_user": counters}
    state = QueueState("auth", [PartitionOffsets("auth", 0, 0, 10, 7)], {"1s": 2}, 3)
    text = "".join(_exposition(worker_metrics(live) + queue_metrics([state])))
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    labels = (("actor_name", "create_user"), ("queue_name", "auth"), ("worker", "auth.1:10"))
    assert samples[("dramatiq_messages_total", labels)] == 6
    assert samples[("dramatiq_message_errors_total", labels)] == 1
    assert samples[("dramatiq_message_retries_total", labels)] == 2
    assert samples[("dramatiq_message_rejects_total", labels)] == 1
    assert samples[("dramatiq_messages_inprogress", labels)] == 1
    bucket = (labels[0], ("le", "50.0"), *labels[1:])
    assert samples[("dramatiq_message_duration_milliseconds_bucket", bucket)] == 1
    assert samples[("kafka_tasks_consumer_lag", (("partition", "0"), ("queue_name", "auth")))] == 3
    assert samples[("kafka_tasks_delayed_messages", (("queue_name", "auth"), ("tier", "1s")))] == 2
    assert samples[("kafka_tasks_dead_letters", (("queue_name", "auth"),))] == 3


def _exposition(families) -> list[str]:
    from prometheus_client import CollectorRegistry, generate_latest

    class Once:
        def collect(self):
            return iter(families)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Once())
    return [generate_latest(registry).decode()]
