"""The local Apache Kafka that `kafka-tasks kafka` runs: configuration, failure modes, and real use."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from confluent_kafka import AcknowledgeType, Consumer, Producer, ShareConsumer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

from broker import devkafka
from tests.conftest import stop_kafka
from tests.eventually import eventually


def run_launcher(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tasks.cli", "kafka", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        future.result(30)


def produce(bootstrap: str, topic: str, *values: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for value in values:
        producer.produce(topic, value)
    assert producer.flush(30) == 0


def consume(bootstrap: str, topic: str, group: str, count: int, *, commit: bool = False) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values = []

    def consumed() -> bool:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            values.append(message.value())
            if commit:
                consumer.commit(message, asynchronous=False)
        return len(values) >= count

    try:
        eventually(consumed, timeout=60, interval=0, what=f"{count} records of {topic}", progress=lambda: values)
    finally:
        consumer.close()
    return values


# Pure configuration ---------------------------------------------------------------------------


def test_broker_config_sets_every_internal_topic_to_one_replica(tmp_path):
    properties = devkafka.BrokerConfig(port=9092, controller_port=9093, data_dir=tmp_path).properties()
    assert properties["offsets.topic.replication.factor"] == "1"
    assert properties["transaction.state.log.replication.factor"] == "1"
    assert properties["transaction.state.log.min.isr"] == "1"
    assert properties["share.coordinator.state.topic.replication.factor"] == "1"
    assert properties["share.coordinator.state.topic.min.isr"] == "1"


def test_broker_config_is_a_combined_kraft_node_on_loopback(tmp_path):
    properties = devkafka.BrokerConfig(port=19092, controller_port=19093, data_dir=tmp_path).properties()
    assert properties["process.roles"] == "broker,controller"
    assert properties["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert properties["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert "share" in properties["group.coordinator.rebalance.protocols"].split(",")


def test_a_clusters_topics_and_internal_topics_get_three_replicas_and_need_two_in_sync(tmp_path):
    cluster = devkafka.LocalCluster(brokers=3, port=29092, data_dir=tmp_path)
    controller = cluster.nodes[1].config.properties()
    brokers = [cluster.nodes[n].config.properties() for n in cluster.broker_ids]
    # The controller creates topics: a topic made with the cluster's default gets its defaults
    assert (controller["process.roles"], controller["default.replication.factor"]) == ("controller", "3")
    assert controller["min.insync.replicas"] == "2"
    assert [b["listeners"] for b in brokers] == [f"PLAINTEXT://127.0.0.1:{29092 + i}" for i in range(3)]
    for broker in brokers:
        assert (broker["process.roles"], broker["offsets.topic.replication.factor"]) == ("broker", "3")
        assert (broker["min.insync.replicas"], broker["transaction.state.log.min.isr"]) == ("2", "2")
        assert broker["controller.quorum.voters"] == controller["controller.quorum.voters"]
    assert cluster.bootstrap_servers == "127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094"


def test_a_cluster_with_tls_or_a_tenant_is_refused_in_one_line(tmp_path):
    (tmp_path / "ssl").mkdir()
    for name, kind in (("ca.pem", "CERTIFICATE"), ("broker.pem", "CERTIFICATE"), ("broker.key", "PRIVATE KEY")):
        (tmp_path / "ssl" / name).write_text(f"-----BEGIN {kind}-----\n")
    result = run_launcher("--brokers", "3", "--ssl-dir", str(tmp_path / "ssl"), env=os.environ.copy())
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kafka-tasks kafka: error: --ssl-dir and --tenant-prefix run on one broker: leave out --brokers"
    ]


def test_cluster_id_is_22_url_safe_characters():
    cluster_id = devkafka.uuid_to_kafka_id(uuid.UUID(int=2**128 - 1))
    assert len(cluster_id) == 22
    assert set(cluster_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_a_new_cluster_id_never_starts_with_a_dash():
    # The first UUID's id starts with "-" (its first six bits are 111110): kafka-storage would
    # read it as an option.
    dashed, plain = uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(int=1)
    assert devkafka.uuid_to_kafka_id(dashed).startswith("-")

    assert devkafka.new_cluster_id(iter([dashed, plain]).__next__) == devkafka.uuid_to_kafka_id(plain)


# Failure modes -------------------------------------------------------------------------------


def test_port_in_use_fails_with_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_launcher("--port", str(port), "--data-dir", str(tmp_path), env=dict(os.environ))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"kafka-tasks kafka: error: port {port} on 127.0.0.1 is already in use; stop what uses it or pass --port"
    ]


def test_missing_java_fails_with_one_line(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path), JAVA_HOME=str(tmp_path / "no-such-jdk"))
    result = run_launcher("--port", str(devkafka.free_port()), "--ephemeral", env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("kafka-tasks kafka: error: Java 17+ is required")


def test_old_java_fails_with_one_line(tmp_path):
    fake_home = tmp_path / "jdk11"
    (fake_home / "bin").mkdir(parents=True)
    java = fake_home / "bin" / "java"
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    java.chmod(0o755)
    env = dict(os.environ, JAVA_HOME=str(fake_home))
    result = run_launcher("--port", str(devkafka.free_port()), "--ephemeral", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"kafka-tasks kafka: error: Java 17+ is required to run Kafka, but {java} is Java 11"
    ]


def test_missing_maven_without_cached_jars_fails_with_one_line(tmp_path):
    java_home = Path(os.path.realpath(shutil.which("java"))).parent.parent
    env = dict(os.environ, PATH=str(tmp_path), JAVA_HOME=str(java_home), KAFKA_TASKS_CACHE=str(tmp_path / "cache"))
    env.pop("KAFKA_HOME", None)
    result = run_launcher("--port", str(devkafka.free_port()), "--ephemeral", env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("kafka-tasks kafka: error: Maven (mvn) is needed once")


def test_kafka_home_that_is_not_a_distribution_fails_with_one_line(tmp_path):
    env = dict(os.environ, KAFKA_HOME=str(tmp_path))
    result = run_launcher("--port", str(devkafka.free_port()), "--ephemeral", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"kafka-tasks kafka: error: KAFKA_HOME={tmp_path} is not an unpacked Apache Kafka distribution "
        "(no libs/kafka_2.13-*.jar)"
    ]


# On the launched broker ----------------------------------------------------------------------


def test_produce_consume_round_trip(kafka, topic_name):
    create_topic(kafka, topic_name)
    produce(kafka, topic_name, b"hello", b"world")
    assert consume(kafka, topic_name, f"g-{topic_name}", 2) == [b"hello", b"world"]


def test_committed_offset_survives_consumer_restart(kafka, topic_name):
    create_topic(kafka, topic_name)
    produce(kafka, topic_name, b"first", b"second")
    group = f"g-{topic_name}"
    assert consume(kafka, topic_name, group, 1, commit=True) == [b"first"]
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": group})
    committed = consumer.committed([TopicPartition(topic_name, 0)], timeout=30)
    consumer.close()
    assert committed[0].offset == 1
    assert consume(kafka, topic_name, group, 1) == [b"second"]


def test_share_consumer_receives_and_acknowledges(kafka, topic_name):
    create_topic(kafka, topic_name)
    group = f"share-{topic_name}"
    admin = AdminClient({"bootstrap.servers": kafka})
    earliest = ConfigResource(
        ResourceType.GROUP,
        group,
        incremental_configs=[
            ConfigEntry("share.auto.offset.reset", "earliest", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    for future in admin.incremental_alter_configs([earliest]).values():
        future.result(30)
    produce(kafka, topic_name, b"shared")
    consumer = ShareConsumer(
        {
            "bootstrap.servers": kafka,
            "group.id": group,
            "share.acknowledgement.mode": "explicit",
        }
    )
    consumer.subscribe([topic_name])
    received = []

    def delivered() -> bool:
        for message in consumer.poll(1.0) or []:
            if message.error() is None:
                received.append((message.value(), message.delivery_count()))
                consumer.acknowledge(message, AcknowledgeType.ACCEPT)
        return bool(received)

    eventually(delivered, timeout=60, interval=0, what="the record, through the share group")
    consumer.commit_sync()
    consumer.close()
    assert received == [(b"shared", 1)]


def test_data_survives_broker_restart(tmp_path, kafka_launcher):
    # Given a broker with a persistent data folder and a record in a topic
    port = devkafka.free_port()
    bootstrap = f"127.0.0.1:{port}"
    data_dir = str(tmp_path / "kafka")
    process, _ = kafka_launcher("--port", str(port), "--data-dir", data_dir)
    try:
        create_topic(bootstrap, "durable")
        produce(bootstrap, "durable", b"kept")
    finally:
        stop_kafka(process)
    assert process.returncode == 0
    # When the broker starts again on the same folder
    process, _ = kafka_launcher("--port", str(port), "--data-dir", data_dir)
    try:
        # Then the record is still there
        assert consume(bootstrap, "durable", "after-restart", 1) == [b"kept"]
    finally:
        stop_kafka(process)
