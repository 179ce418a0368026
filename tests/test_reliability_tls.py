"""Reliability: TLS the Heroku way, for real.

`kafka-tasks kafka --ssl-dir` starts a broker whose SSL listener requires client certificates.
The whole system (release, gateway, workers) then reaches it only through ``KAFKA_URL=kafka+ssl://``
with ``KAFKA_TRUSTED_CERT``, ``KAFKA_CLIENT_CERT`` and ``KAFKA_CLIENT_CERT_KEY`` as PEM contents,
as on Heroku; a client whose certificate another CA signed is refused, and so is one with none; and
no private key shows up in any log.
"""

from __future__ import annotations

import sqlite3
import subprocess
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from broker import DeliveryFailed, KafkaSettings, devkafka
from broker.producer import DurableProducer, Record
from tests.certificates import Authority, broker_ssl_dir
from tests.reliability import report
from tests.system import ROOT, System, call, procfile

pytestmark = pytest.mark.reliability

#: How long a refused client tries before its send fails (ms).
REFUSED_TIMEOUT_MS = 3_000


def key_body_lines(key_pem: str) -> list[str]:
    """The base64 lines of a PEM key: what must never appear in a log."""
    return [line for line in key_pem.strip().splitlines()[1:-1] if line.strip()]


# Reading back --------------------------------------------------------------------------------


def record_count(plaintext: str, topic: str) -> int:
    """How many records a topic holds, asked over the broker's plaintext listener."""
    consumer = Consumer({"bootstrap.servers": plaintext, "group.id": "tls-counter"})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        total = 0
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30, cached=False)
            total += high - low
        return total
    finally:
        consumer.close()


def refused_send(settings: KafkaSettings, topic: str) -> tuple[str, float]:
    """Sends one record as a client with these settings; returns the failure and how long it took."""
    producer = DurableProducer(settings.client_config(), delivery_timeout_ms=REFUSED_TIMEOUT_MS)
    started = time.monotonic()
    try:
        producer.send(Record(topic, b"should never be stored"))
    except DeliveryFailed as e:
        # Only the text is kept: a traceback would keep the client, and its retries, alive.
        return str(e), time.monotonic() - started
    finally:
        producer.close(timeout=1)
    pytest.fail(f"a client that should be refused could send to {topic}", pytrace=False)


# The scenario --------------------------------------------------------------------------------


def test_the_system_runs_over_tls_with_client_certificates(tmp_path, capfd, kafka_launcher):
    # Given a CA, a broker certificate and a client certificate, and a client of another CA
    authority, stranger = Authority("kafka-tasks test CA"), Authority("another CA")
    ssl_dir = broker_ssl_dir(authority, tmp_path / "ssl")
    client_cert, client_key = authority.issue("kafka-tasks client", server=False)
    rogue_cert, rogue_key = stranger.issue("kafka-tasks client", server=False)
    broker_key = (ssl_dir / "broker.key").read_text()
    secrets = {"broker key": broker_key, "client key": client_key, "rogue key": rogue_key}

    # And `kafka-tasks kafka` with an SSL listener that requires client certificates
    port, ssl_port = devkafka.free_port(), devkafka.free_port()
    data_dir = tmp_path / "kafka"
    started = time.monotonic()
    process, ready = kafka_launcher(
        "--port", str(port), "--data-dir", str(data_dir), "--ssl-dir", str(ssl_dir), "--ssl-port", str(ssl_port)
    )
    broker_start = time.monotonic() - started
    launcher_output = ready
    system = None
    try:
        assert f"TLS with client certificates at 127.0.0.1:{ssl_port}" in ready, ready
        url = f"kafka+ssl://127.0.0.1:{ssl_port}"
        heroku = {
            "KAFKA_URL": url,
            "KAFKA_TRUSTED_CERT": authority.pem,
            "KAFKA_CLIENT_CERT": client_cert,
            "KAFKA_CLIENT_CERT_KEY": client_key,
        }

        # When the system starts with only the Heroku variables to reach Kafka (the plaintext
        # address it is given leads nowhere, so every client must use KAFKA_URL)
        system = System("127.0.0.1:1", tmp_path)
        system.env.update(heroku)
        system.start()
        prefix = system.env["KAFKA_PREFIX"]
        release = subprocess.run(
            ["bash", "-c", procfile()["release"]], cwd=ROOT, env=system.env, capture_output=True, text=True, timeout=120
        )
        assert release.returncode == 0, release.stderr

        # And a user signs up
        signed_up = time.monotonic()
        status, body, _ = call("POST", f"{system.base}/api/auth/sign-up", {"name": "Ada", "email": "ada@example.com"})
        assert status == 202, body
        task = system.wait_for(body["taskId"], "succeeded", "failed", "dead", timeout=60)
        end_to_end = time.monotonic() - signed_up

        # Then the task succeeded, the user is in the database and its message in Kafka
        assert task["status"] == "succeeded", task
        with sqlite3.connect(tmp_path / "system.db") as db:
            users = db.execute("SELECT count(*) FROM users WHERE email = 'ada@example.com'").fetchone()[0]
            statuses = db.execute("SELECT status FROM tasks").fetchall()
        assert users == 1
        assert statuses == [("succeeded",)]
        assert record_count(f"127.0.0.1:{port}", f"{prefix}auth") == 1

        # When a client whose certificate another CA signed, and a client with no certificate, send
        rogue = KafkaSettings.from_env({**heroku, "KAFKA_CLIENT_CERT": rogue_cert, "KAFKA_CLIENT_CERT_KEY": rogue_key})
        anonymous = KafkaSettings.from_env({"KAFKA_URL": url, "KAFKA_TRUSTED_CERT": authority.pem})
        rogue_error, rogue_took = refused_send(rogue, f"{prefix}auth")
        anonymous_error, anonymous_took = refused_send(anonymous, f"{prefix}auth")

        # Then both are refused, and nothing they sent was stored
        assert "Kafka did not acknowledge" in rogue_error and "Kafka did not acknowledge" in anonymous_error
        assert record_count(f"127.0.0.1:{port}", f"{prefix}auth") == 1
    finally:
        if system is not None:
            system.stop()
        process.terminate()
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        launcher_output += out + err
    handshake_failures = (data_dir / "server.log").read_text(errors="replace").count("SSL handshake failed")

    # And no private key appears in any log: the processes', the broker's, the launcher's, release's
    # output, or this test's own captured output (librdkafka's errors included)
    captured = capfd.readouterr()
    logs = {path.name: path.read_text(errors="replace") for path in [*tmp_path.glob("*.log"), *data_dir.glob("*.log")]}
    logs |= {
        "launcher": launcher_output,
        "release": release.stdout + release.stderr,
        "test output": captured.out + captured.err,
    }
    assert {"web.log", "auth.log", "payments.log", "server.log", "stdout.log"} <= set(logs)
    leaks = [
        (what, where)
        for what, pem in secrets.items()
        for line in key_body_lines(pem)
        for where, text in logs.items()
        if line in text
    ]
    assert leaks == [], f"key material in logs: {leaks}"
    assert handshake_failures >= 2, "the broker logged no refused handshakes"

    report("TLS", "broker start with an SSL listener requiring client certificates", f"{broker_start:.1f} s")
    report("TLS", "sign-up over `kafka+ssl://` to `succeeded`", f"{end_to_end:.2f} s")
    report("TLS", "users in the database / records on the auth topic", f"{users} / 1")
    report(
        "TLS",
        "client with another CA's certificate",
        f"refused (DeliveryFailed after {rogue_took:.1f} s), nothing stored",
    )
    report(
        "TLS", "client without a certificate", f"refused (DeliveryFailed after {anonymous_took:.1f} s), nothing stored"
    )
    report("TLS", "logs searched for key material / lines found", f"{len(logs)} / {len(leaks)}")
