"""Dead letters: ids, decoding, replay markers, the table, the `dlq` command, oversized records and
the TLS listener's configuration.  The pure parts run without Kafka; a few replay rules are then
checked on the real broker."""

from __future__ import annotations

from types import SimpleNamespace

import dramatiq
import pytest
from confluent_kafka import Producer

from broker import DeadLetterInfo, KafkaBroker, devkafka, dlq
from broker.consumer import KafkaConsumer
from tasks.cli import build_parser, main


def message(actor="charge", **options) -> dramatiq.Message:
    return dramatiq.Message(queue_name="payments", actor_name=actor, args=(1,), kwargs={"a": 2}, options=options)


def headers(reason="ActorNotFound: charge", **fields) -> list[tuple[str, bytes]]:
    return DeadLetterInfo(reason=reason, topic="payments", partition=1, offset=41, **fields).headers()


# Ids -----------------------------------------------------------------------------------------


def test_an_id_is_the_offset_in_partition_zero_and_partition_colon_offset_elsewhere():
    assert dlq.dead_letter_id(0, 7) == "7"
    assert dlq.dead_letter_id(2, 7) == "2:7"


@pytest.mark.parametrize("text, expected", [("7", "7"), (" 0:7 ", "7"), ("2:7", "2:7")])
def test_parse_id_accepts_what_list_prints(text, expected):
    assert dlq.parse_id(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "1:x", "-1", "1:-2", "8b0c1d2e-uuid"])
def test_parse_id_rejects_anything_else(text):
    with pytest.raises(ValueError, match="no dead-letter id"):
        dlq.parse_id(text)


# Decoding a dead letter ----------------------------------------------------------------------


def test_a_dead_message_decodes_with_its_reason_and_actor():
    # Given the record of a message dead-lettered after two retries
    original = message(retries=2)
    # When it is read back
    letter = dlq.DeadLetter.from_record(0, 5, original.encode(), headers(retries=2), 1_700_000_000_000)
    # Then it says what, why and from where
    assert (letter.id, letter.actor_name, letter.message_id) == ("5", "charge", original.message_id)
    assert letter.reason == "ActorNotFound: charge"
    assert (letter.info.topic, letter.info.partition, letter.info.offset, letter.info.retries) == ("payments", 1, 41, 2)
    assert letter.decode_error is None and not letter.replayed


def test_an_undecodable_record_has_no_message_and_says_why():
    letter = dlq.DeadLetter.from_record(0, 6, b"\xff not json", headers("undecodable message: ..."), 0)
    assert letter.message is None and letter.actor_name is None and letter.message_id is None
    assert letter.decode_error.startswith("DecodeError")


def test_a_record_without_dead_letter_headers_is_still_listed():
    letter = dlq.DeadLetter.from_record(0, 0, message().encode(), None, 0)
    assert letter.info is None
    assert letter.reason == "(no dead-letter headers)"
    assert letter.actor_name == "charge"


def test_a_cut_oversized_record_cannot_be_decoded_and_says_so():
    letter = dlq.DeadLetter.from_record(0, 1, b"x" * 100, headers("oversized message", original_size=5000), 0)
    assert letter.message is None
    assert letter.decode_error == "only the first 100 of its 5000 bytes were kept"


def test_original_size_travels_in_the_headers_only_when_set():
    info = DeadLetterInfo(reason="oversized message", topic="q", partition=0, offset=3, original_size=20_000)
    assert DeadLetterInfo.from_headers(info.headers()).original_size == 20_000
    plain = DeadLetterInfo(reason="rejected", topic="q", partition=0, offset=3)
    assert "x-dead-letter-original-size" not in dict(plain.headers())
    assert DeadLetterInfo.from_headers(plain.headers()).original_size is None


# Replay --------------------------------------------------------------------------------------


def test_a_replayed_message_keeps_its_id_and_gets_a_fresh_retry_budget():
    # Given a message that failed three times, from the delay queue, with its own options
    failed = message(
        retries=3, traceback="Traceback ...", requeue_timestamp=1, eta=2, max_retries=5, partition_key="user-1"
    )
    failed = dramatiq.Message(**{**failed.asdict(), "queue_name": "payments.DQ", "message_timestamp": 1})
    # When it is prepared for replay
    fresh = dlq.fresh_message(failed, "payments")
    # Then only the traces of the earlier attempts are gone, and it is marked replayed
    assert fresh.message_id == failed.message_id
    assert fresh.queue_name == "payments"
    assert (fresh.actor_name, fresh.args, fresh.kwargs) == ("charge", (1,), {"a": 2})
    assert fresh.options == {"max_retries": 5, "partition_key": "user-1", dlq.REPLAYED_OPTION: fresh.message_timestamp}
    assert fresh.message_timestamp > 1
    assert failed.options["retries"] == 3  # the dead letter itself is untouched


def test_a_marker_round_trips_through_its_record():
    marker = dlq.ReplayMarker("3", "m-1", {0: 9, 2: 4}, replayed_at=123)
    assert dlq.ReplayMarker.decode(b"3", marker.encode()) == marker


@pytest.mark.parametrize("value", [b"", b"not json", b"{}", b'{"message_id": "m", "ends": 3}'])
def test_a_record_that_is_no_marker_does_not_decode(value):
    with pytest.raises((ValueError, KeyError, TypeError, AttributeError)):
        dlq.ReplayMarker.decode(b"1", value)


def test_a_marker_covers_every_earlier_dead_letter_of_its_message_and_no_later_one():
    # Given a message dead-lettered at offsets 2 and 5 and replayed when the topic ended at 6,
    # then dead-lettered again at 8; and another message at 3
    same = message()
    letters = [dlq.DeadLetter.from_record(0, offset, same.encode(), headers(), 0) for offset in (2, 5, 8)]
    other = dlq.DeadLetter.from_record(0, 3, message().encode(), headers(), 0)
    undecodable = dlq.DeadLetter.from_record(0, 4, b"?", headers(), 0)
    marker = dlq.ReplayMarker("2", same.message_id, {0: 6})
    # When the markers are applied
    marked = dlq.mark_replayed([*letters, other, undecodable], [marker])
    # Then the duplicate is covered too, the new failure and the other message are not
    assert [letter.replayed for letter in marked] == [True, True, False, False, False]


def test_the_table_shows_one_line_per_dead_letter_with_short_reasons():
    letters = [
        dlq.DeadLetter.from_record(0, 0, message().encode(), headers(retries=3), 1_700_000_000_000),
        dlq.DeadLetter.from_record(0, 1, b"?", headers("undecodable message:\n" + "x" * 500), 1_700_000_000_000),
    ]
    lines = dlq.render_table(letters).splitlines()
    assert lines[0].split() == [
        "ID",
        "DEAD-LETTERED",
        "(UTC)",
        "ACTOR",
        "MESSAGE",
        "ID",
        "RETRIES",
        "REPLAYED",
        "REASON",
    ]
    assert lines[1].split()[:4] == ["0", "2023-11-14", "22:13:20", "charge"]
    assert "ActorNotFound: charge" in lines[1]
    assert lines[2].split()[:4] == ["1", "2023-11-14", "22:13:20", "-"]
    assert lines[2].endswith("...") and len(lines[2].split("undecodable")[1]) < dlq.MAX_REASON_WIDTH
    assert len(lines) == 3


# The command ---------------------------------------------------------------------------------


def test_dlq_replay_takes_several_ids_and_defaults_to_the_app_module():
    args = build_parser().parse_args(["dlq", "replay", "--id", "3,0:5", "payments", "--id", "7"])
    assert (args.queue, args.ids, args.module) == ("payments", [["3", "0:5"], ["7"]], "tasks.app:setup_broker")
    args = build_parser().parse_args(["dlq", "list", "auth", "--module", "tests.workerapp"])
    assert (args.queue, args.module) == ("auth", "tests.workerapp")


def test_dlq_fails_in_one_line_when_the_module_sets_no_kafka_broker(capsys):
    assert main(["dlq", "list", "payments", "--module", "json"]) == 1
    # Which broker is found depends on what earlier tests set as Dramatiq's global broker.
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("kafka-tasks dlq list: error: module json set no KafkaBroker as Dramatiq's broker (found ")


def test_dlq_fails_in_one_line_when_the_module_does_not_exist(capsys):
    assert main(["dlq", "replay", "payments", "--module", "no_such_module_here"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "kafka-tasks dlq replay: error: ModuleNotFoundError: No module named 'no_such_module_here'"
    ]


# Oversized records ---------------------------------------------------------------------------


def test_a_record_over_the_limit_is_oversized_and_one_at_the_limit_is_not():
    consumer = SimpleNamespace(broker=SimpleNamespace(max_message_bytes=10))
    record = SimpleNamespace(value=lambda: b"x" * 11)
    assert KafkaConsumer._oversized(consumer, record) == "oversized message: 11 bytes > 10 bytes"
    assert KafkaConsumer._oversized(consumer, SimpleNamespace(value=lambda: b"x" * 10)) is None
    assert KafkaConsumer._oversized(consumer, SimpleNamespace(value=lambda: None)) is None


def test_the_default_limit_is_one_mebibyte():
    assert KafkaBroker(bootstrap_servers="127.0.0.1:1").max_message_bytes == 1_048_576


# The TLS listener's configuration ------------------------------------------------------------

PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\nAAAA\n-----END CERTIFICATE-----\n"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nSECRETKEYBODY\n-----END PRIVATE KEY-----\n"


def write_tls_dir(directory, **overrides):
    files = {"ca.pem": PEM_CERT, "broker.pem": PEM_CERT, "broker.key": PEM_KEY, **overrides}
    for name, text in files.items():
        if text is not None:
            (directory / name).write_text(text)
    return directory


def test_the_tls_listener_requires_client_certificates_and_never_shows_its_key(tmp_path):
    tls = devkafka.TLSListener.from_dir(write_tls_dir(tmp_path), 19093)
    properties = devkafka.BrokerConfig(port=19092, controller_port=19094, data_dir=tmp_path, tls=tls).properties()
    assert properties["listeners"] == ("PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19094,SSL://127.0.0.1:19093")
    assert properties["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092,SSL://127.0.0.1:19093"
    assert properties["inter.broker.listener.name"] == "PLAINTEXT"
    assert properties["listener.security.protocol.map"].split(",")[-1] == "SSL:SSL"
    assert properties["ssl.client.auth"] == "required"
    assert properties["ssl.keystore.type"] == properties["ssl.truststore.type"] == "PEM"
    assert "SECRETKEYBODY" in properties["ssl.keystore.key"]
    assert "SECRETKEYBODY" not in repr(tls)


def test_pem_values_are_rendered_on_one_properties_line(tmp_path):
    tls = devkafka.TLSListener.from_dir(write_tls_dir(tmp_path), 19093)
    rendered = devkafka.BrokerConfig(port=19092, controller_port=19094, data_dir=tmp_path, tls=tls).render()
    [line] = [line for line in rendered.splitlines() if line.startswith("ssl.keystore.key=")]
    assert line == r"ssl.keystore.key=-----BEGIN PRIVATE KEY-----\nSECRETKEYBODY\n-----END PRIVATE KEY-----"


def test_without_tls_there_is_only_the_plaintext_listener(tmp_path):
    properties = devkafka.BrokerConfig(port=19092, controller_port=19094, data_dir=tmp_path).properties()
    assert "SSL" not in properties["listeners"]
    assert not any(key.startswith("ssl.") for key in properties)


@pytest.mark.parametrize(
    "overrides, error",
    [
        ({"broker.key": None}, "cannot read .*broker.key for the TLS listener"),
        ({"broker.key": "-----BEGIN EC PRIVATE KEY-----\n..."}, "must hold an unencrypted PKCS#8 private key"),
        ({"ca.pem": "/etc/ssl/ca.pem"}, "ca.pem must hold PEM certificates"),
    ],
)
def test_a_bad_ssl_dir_fails_in_one_line(tmp_path, overrides, error):
    with pytest.raises(devkafka.LocalKafkaError, match=error):
        devkafka.TLSListener.from_dir(write_tls_dir(tmp_path, **overrides), 19093)


def test_ssl_port_without_ssl_dir_is_refused(capsys):
    assert main(["kafka", "--ssl-port", "9093", "--ephemeral"]) == 2
    assert capsys.readouterr().err.splitlines() == ["kafka-tasks kafka: error: --ssl-port needs --ssl-dir"]


# Replay rules on the real broker -------------------------------------------------------------


def dead_letter_directly(kafka: str, topic: str, *values: bytes) -> None:
    producer = Producer({"bootstrap.servers": kafka})
    for value in values:
        producer.produce(topic, value, headers=headers())
    assert producer.flush(30) == 0


def test_listing_a_queue_without_a_dead_letter_topic_fails_clearly(kafka_broker, queue_name):
    with pytest.raises(dlq.DeadLetterError, match=f"no dead-letter topic {queue_name}.XQ"):
        dlq.list_dead_letters(kafka_broker, queue_name)


def test_replay_skips_duplicates_and_replays_a_later_failure_again(kafka, kafka_broker, queue_name):
    # Given one message dead-lettered twice (a redelivery), and an unknown id
    kafka_broker.declare_queue(queue_name)
    kafka_broker.ensure_topics()
    dead = message(retries=1)
    dead_letter_directly(kafka, f"{queue_name}.XQ", dead.encode(), dead.encode())
    with pytest.raises(dlq.DeadLetterError, match="no dead letter with id 9"):
        dlq.replay(kafka_broker, queue_name, ["0", "9"])
    assert queue_size(kafka_broker, queue_name) == 0  # an unknown id replays nothing
    # When everything is replayed, twice
    first = dlq.replay(kafka_broker, queue_name)
    second = dlq.replay(kafka_broker, queue_name)
    # Then the message went back once, and the duplicate and the second run were skipped
    assert [letter.id for letter in first.replayed] == ["0"]
    assert [(letter.id, why) for letter, why in first.skipped] == [("1", "the same message as dead letter 0")]
    assert first.replayed[0].message_id == dead.message_id
    assert second.replayed == [] and [why for _, why in second.skipped] == ["already replayed"] * 2
    assert queue_size(kafka_broker, queue_name) == 1
    # And when it fails again after the replay, the new dead letter can be replayed
    dead_letter_directly(kafka, f"{queue_name}.XQ", dead.encode())
    third = dlq.replay(kafka_broker, queue_name)
    assert [letter.id for letter in third.replayed] == ["2"]
    assert [letter.replayed for letter in dlq.list_dead_letters(kafka_broker, queue_name)] == [True, True, True]
    assert queue_size(kafka_broker, queue_name) == 2


def queue_size(broker: KafkaBroker, queue_name: str) -> int:
    """How many records the queue's topic holds (read_to_end waits out a new topic's leader election)."""
    return len(dlq.read_to_end(broker, queue_name, timeout=30)[0])


def test_reading_a_topic_returns_every_record_up_to_its_end(kafka, kafka_broker, topic_name):
    # Given a topic of two partitions with records in both
    from confluent_kafka.admin import NewTopic

    for future in kafka_broker.admin.create_topics([NewTopic(topic_name, 2, 1)]).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": kafka})
    for n in range(10):
        producer.produce(topic_name, str(n).encode(), partition=n % 2)
    assert producer.flush(30) == 0
    # When it is read to its end (it raises if the end is not reached within the timeout)
    records, ends = dlq.read_to_end(kafka_broker, topic_name, timeout=30)
    # Then every record is there
    assert sorted(int(r.value()) for r in records) == list(range(10))
    assert ends == {0: 5, 1: 5}
