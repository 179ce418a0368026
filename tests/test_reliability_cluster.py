"""Reliability on a three-broker cluster (one KRaft controller, replication 3, min.insync.replicas 2):
the broker leading most of a queue's partitions SIGKILLed under 2,000 payments, a rolling restart
under sign-ups, and two brokers down at once.  The Procfile's processes run on the cluster as on
any Kafka."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from confluent_kafka.admin import AdminClient

from broker import devkafka
from tests.eventually import eventually
from tests.reliability import report
from tests.services import Services, Stream, payment_counts, task_statuses, user_creators
from tests.system import call

pytestmark = pytest.mark.reliability

#: Payments in flight when the leader dies, and the clients sending them.
PAYMENTS, CLIENTS = 2_000, 16


@pytest.fixture(scope="module")
def cluster():
    cluster = devkafka.LocalCluster(brokers=3)
    try:
        cluster.start()
    except devkafka.LocalKafkaError as e:
        pytest.fail(f"the cluster did not start: {e}", pytrace=False)
    yield cluster
    cluster.stop()


@pytest.fixture
def system(cluster, tmp_path):
    with Services(cluster.bootstrap_servers, tmp_path) as services:
        yield services


def leaders(cluster, topic: str) -> Counter:
    """How many of a topic's partitions each broker leads."""
    metadata = AdminClient({"bootstrap.servers": cluster.bootstrap_servers}).list_topics(topic, timeout=30)
    return Counter(p.leader for p in metadata.topics[topic].partitions.values())


def fully_replicated(cluster) -> bool:
    """Whether every partition of the cluster has its three replicas in sync."""
    metadata = AdminClient({"bootstrap.servers": cluster.bootstrap_servers}).list_topics(timeout=30)
    return all(len(p.isrs) == 3 for t in metadata.topics.values() for p in t.partitions.values())


def keyed_senders(system, keys: list[str], user_id: int) -> tuple[list, threading.Thread]:
    """Sends a payment per key from ``CLIENTS`` threads, each again after a 503 (the same key, as a
    client does), until every key got a 202.  Returns the answers, ``(time, status)``, as they come."""
    pending = list(reversed(keys))
    answers: list[tuple[float, int]] = []
    lock = threading.Lock()

    def client():
        while True:
            with lock:
                if not pending:
                    return
                key = pending.pop()
            body = {"userId": user_id, "amount": "1.00", "currency": "EUR"}
            try:
                status = call("POST", f"{system.base}/api/payments/pay", body, {"Idempotency-Key": key})[0]
            except OSError:
                status = 0
            with lock:
                answers.append((time.monotonic(), status))
                if status != 202:
                    pending.append(key)
            if status != 202:
                time.sleep(0.5)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    done = threading.Thread(target=lambda: [t.join() for t in threads], daemon=True)
    done.start()
    return answers, done


def test_the_broker_leading_most_of_a_queue_killed_under_2000_payments_loses_none(cluster, system):
    user = system.sign_up("Ada", "ada@example.com")
    prefix = system.prefix
    keys = [f"order-{n}" for n in range(PAYMENTS)]
    # Given 2,000 payments being sent
    answers, done = keyed_senders(system, keys, user["id"])
    eventually(lambda: len(answers) >= 300, timeout=60, what="300 payments answered")
    # When the broker that leads most of the payments queue's partitions is SIGKILLed
    victim, led = leaders(cluster, f"{prefix}payments").most_common(1)[0]
    killed_at = time.monotonic()
    cluster.kill_broker(victim)
    eventually(
        lambda: len(answers) >= 1_200,
        timeout=120,
        what="1,200 payments answered with a broker down",
        progress=lambda: f"{Counter(s for _, s in answers)}\n{system.log('web')}\n{system.log('payments')}",
    )
    # And later restarted
    cluster.start_broker(victim)
    done.join(240)
    assert not done.is_alive(), "hung: the payments were not all accepted"
    # Then every payment is recorded once, and none is lost
    system.wait_until(
        "every payment recorded",
        lambda: sum(payment_counts(system.store).values()) >= PAYMENTS,
        lambda: f"{sum(payment_counts(system.store).values())} of {PAYMENTS}",
        timeout=180,
    )
    counts = payment_counts(system.store)
    assert all(counts[key] == 1 for key in keys), {k: counts[k] for k in keys if counts[k] != 1}
    statuses = Counter(status for _, status in answers)
    assert set(statuses) <= {202, 503}, statuses
    failed = [at for at, status in answers if status != 202 and at >= killed_at]
    report("Cluster", "payments sent / recorded once", f"{PAYMENTS} / {sum(1 for k in keys if counts[k] == 1)}")
    report("Cluster", "broker SIGKILLed (led partitions of payments)", f"{victim} ({led} of 4)")
    report(
        "Cluster", "answers while it was down and after", ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
    )
    report("Cluster", "time sends failed after the kill (s)", f"{(max(failed) - killed_at) if failed else 0:.1f}")


def test_a_rolling_restart_loses_no_sign_up_and_answers_no_5xx_but_503(cluster, system):
    stream = Stream(
        system.base,
        lambda n: ("POST", "/api/auth/sign-up", {"name": f"U{n}", "email": f"u{n}@example.com"}, None),
        clients=4,
        rate=40,
    ).start()
    try:
        # When each broker in turn stops cleanly and starts again, once the cluster is whole again
        for node_id in cluster.broker_ids:
            eventually(lambda: fully_replicated(cluster), timeout=120, what="every partition in sync")
            cluster.stop_broker(node_id)
            cluster.start_broker(node_id)
    finally:
        results = stream.stop()
    statuses = Counter(status for _, _, _, status, _, _, _ in results)
    accepted = [body["taskId"] for _, _, _, status, body, _, _ in results if status == 202]
    # Then no answer was a 5xx but 503, and every accepted sign-up made its user
    assert set(statuses) <= {202, 503}, statuses
    system.wait_until(
        "every accepted sign-up run",
        lambda: task_statuses(system.store, accepted)["succeeded"] == len(accepted),
        lambda: task_statuses(system.store, accepted),
        timeout=180,
        logs=("auth",),
    )
    # (a 503 that says Kafka may have stored the task names it: its user may exist too)
    maybe = {body.get("taskId") for _, _, _, status, body, _, _ in results if status == 503 and body}
    creators = set(user_creators(system.store))
    assert set(accepted) <= creators <= set(accepted) | maybe
    report("Cluster", "rolling restart: sign-ups answered", ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))


def test_two_brokers_down_refuses_sends_loses_nothing_and_recovers_with_one_back(cluster, system):
    eventually(lambda: fully_replicated(cluster), timeout=120, what="every partition in sync")
    stream = Stream(
        system.base,
        lambda n: ("POST", "/api/auth/sign-up", {"name": f"D{n}", "email": f"d{n}@example.com"}, None),
        clients=4,
        rate=20,
    ).start()
    first, second = cluster.broker_ids[:2]
    try:
        eventually(lambda: len(stream.results) >= 20, timeout=30, what="sign-ups flowing")
        # When two brokers of three go down (below min.insync.replicas)
        down_at = time.monotonic()
        cluster.kill_broker(first)
        cluster.kill_broker(second)

        def refused_since_down(seconds: float) -> bool:
            recent = [r for r in list(stream.results) if r[1] >= down_at + 5]
            return len(recent) >= seconds * 10 and all(r[3] == 503 for r in recent)

        # Then sends are refused with 503
        eventually(lambda: refused_since_down(2), timeout=60, what="sends refused with 503")
        # When one broker returns, sends are taken again
        cluster.start_broker(first)
        back_at = time.monotonic()
        eventually(lambda: any(r[3] == 202 and r[1] > back_at for r in list(stream.results)), timeout=90,
                   what="a sign-up accepted again")  # fmt: skip
    finally:
        results = stream.stop()
        cluster.start_broker(second)
    statuses = Counter(status for _, _, _, status, _, _, _ in results)
    accepted = [body["taskId"] for _, _, _, status, body, _, _ in results if status == 202]
    assert set(statuses) <= {202, 503}, statuses
    # And nothing that got a 202 is lost
    system.wait_until(
        "every accepted sign-up run",
        lambda: task_statuses(system.store, accepted)["succeeded"] == len(accepted),
        lambda: task_statuses(system.store, accepted),
        timeout=180,
        logs=("auth",),
    )
    report(
        "Cluster", "two brokers down: sign-ups answered", ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
    )
