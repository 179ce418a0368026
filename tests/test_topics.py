"""broker.topics: the commands that create a queue's topics where clients may not (no Kafka)."""

from __future__ import annotations

from broker import KafkaBroker
from broker.topics import TopicSpec, creation_commands


def test_each_missing_topic_gets_its_partitions_retention_and_compaction_without_the_prefix():
    specs = [
        TopicSpec("tenant-1.auth", 4, -1, {}),
        TopicSpec("tenant-1.auth.DQ.1s", 4, -1, {"retention.ms": str(14 * 86_400_000)}),
        TopicSpec(
            "tenant-1.auth.XQ.replayed",
            1,
            -1,
            {"cleanup.policy": "compact,delete", "retention.ms": str(7 * 86_400_000)},
        ),
    ]
    assert creation_commands(specs, ["auth", "auth.DQ"], prefix="tenant-1.") == [
        "heroku kafka:topics:create auth --partitions 4",
        "heroku kafka:topics:create auth.DQ.1s --partitions 4 --retention-time '14 days'",
        "heroku kafka:topics:create auth.XQ.replayed --partitions 1 --retention-time '7 days' --compaction",
        "heroku kafka:consumer-groups:create auth",
        "heroku kafka:consumer-groups:create auth.DQ",
    ]


def test_a_retention_outside_herokus_bounds_is_brought_within_them():
    short = TopicSpec("results", 16, -1, {"retention.ms": "600000"})  # the results' 10 minutes
    assert creation_commands([short], []) == [
        "heroku kafka:topics:create results --partitions 16 --retention-time '6 hours'"
    ]


def test_a_queue_has_its_own_consumer_group_and_its_delay_queues():
    broker = KafkaBroker(bootstrap_servers="127.0.0.1:1")
    broker.declare_queue("payments")
    broker.declare_queue("auth")
    assert broker.consumer_groups() == ["auth", "auth.DQ", "payments", "payments.DQ"]
    assert broker.topic_specs("auth")[-1].name == "auth.XQ.replayed"
