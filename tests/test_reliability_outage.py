"""Reliability, scenario 2: Kafka stops for 10 s during a steady stream of sign-ups.

The scenario runs its own broker on a persistent data folder (the session's broker is shared), stops
it, and starts it again on the same port and folder, as a broker restart or a failover looks to
the clients.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.reliability import report
from tests.services import (
    Services,
    Stream,
    consumer_lag,
    task_statuses,
    topic_records,
    user_creators,
)
from tests.system import call

pytestmark = pytest.mark.reliability

#: How long Kafka is down, from the broker's exit to the start of its restart (s).
OUTAGE = 10

#: The processes whose logs are watched during the outage.
LOGGED = ("web", "auth", "payments")

#: The most lines a process may log during the outage: each of its clients' conditions once
#: (librdkafka's own logging printed thousands).
MAX_OUTAGE_LOG_LINES = 60

#: The gateway's promise while Kafka is down: a 503 within this many seconds (README).
ANSWER_WITHIN = 5

#: The sign-up stream: concurrent clients, and requests per second in all.
CLIENTS, RATE = 4, 20


@pytest.fixture
def services(own_kafka, tmp_path):
    """The system on this test's own Kafka, which it stops and starts (overrides conftest's)."""
    with Services(own_kafka.bootstrap_servers, tmp_path) as services:
        yield services


def sign_up(n: int):
    return "POST", "/api/auth/sign-up", {"name": f"User {n}", "email": f"user{n}@example.com"}, None


@pytest.mark.timeout(240)
def test_kafka_outage_answers_503_fast_and_loses_no_accepted_sign_up(own_kafka, services):
    pids = {name: services.members(name) for name in ("web", "auth", "payments")}
    # Given a steady stream of sign-ups
    stream = Stream(services.base, sign_up, clients=CLIENTS, rate=RATE).start()
    time.sleep(5)

    # When Kafka stops for 10 s, and comes back on the same port and data
    stopping = time.monotonic()
    lines_before = {name: len(services.log_text(name).splitlines()) for name in LOGGED}
    own_kafka.stop()
    down = time.monotonic()
    ready_status, ready_body, _ = call("GET", f"{services.base}/readyz")
    while time.monotonic() < down + OUTAGE:
        call("GET", f"{services.base}/readyz")  # a platform's probes, every second
        time.sleep(1)
    lines_during = {name: len(services.log_text(name).splitlines()) - lines_before[name] for name in LOGGED}
    own_kafka.start()
    up = time.monotonic()
    services.wait_until(
        "a sign-up accepted after Kafka came back",
        lambda: any(r[1] > up and r[3] == 202 for r in list(stream.results)),
        lambda: Counter(r[3] for r in list(stream.results) if r[1] > up),
        timeout=60,
        logs=("web",),
    )
    recovered = min(r[1] + r[2] for r in list(stream.results) if r[1] > up and r[3] == 202) - up
    time.sleep(5)
    results = stream.stop()

    # Then the gateway answered only 202 or a JSON 503 with Retry-After, each within 5 s
    statuses = Counter(r[3] if r[6] is None else r[6].split(":")[0] for r in results)
    unavailable = [r for r in results if r[3] == 503]
    slowest = max((r[2] for r in unavailable), default=0.0)
    accepted = {r[4]["taskId"] for r in results if r[3] == 202}
    # and every accepted sign-up was processed once Kafka was back
    services.wait_until(
        f"all {len(accepted)} accepted sign-ups processed",
        lambda: task_statuses(services.store, accepted)["succeeded"] == len(accepted),
        lambda: task_statuses(services.store, accepted),
        timeout=90,
        logs=("auth",),
    )
    services.wait_until(
        "the auth groups committed everything",
        lambda: not any(consumer_lag(own_kafka.bootstrap_servers, services.prefix, ["auth"]).values()),
        lambda: consumer_lag(own_kafka.bootstrap_servers, services.prefix, ["auth"]),
        timeout=60,
        logs=("auth",),
    )
    creators = user_creators(services.store)
    records = topic_records(own_kafka.bootstrap_servers, services.prefix)
    after = {name: services.members(name) for name in ("web", "auth", "payments")}

    report("Broker outage", "broker down, from its exit to its restart (s)", OUTAGE)
    report("Broker outage", "Kafka unreachable, from the stop to ready again (s)", f"{up - stopping:.1f}")
    report(
        "Broker outage",
        "sign-ups sent / 202 / 503 / other",
        f"{len(results)} / {statuses[202]} / "
        f"{statuses[503]} / {sum(n for s, n in statuses.items() if s not in (202, 503))}",
    )
    report("Broker outage", "slowest 503 (s)", f"{slowest:.2f}")
    report("Broker outage", "/readyz during the outage", ready_status)
    report("Broker outage", "first 202 after Kafka was ready (s)", f"{recovered:.1f}")
    report(
        "Broker outage",
        "accepted sign-ups processed / users in the database",
        f"{task_statuses(services.store, accepted)['succeeded']} / {sum(creators.values())}",
    )
    report("Broker outage", "sign-up records in Kafka (auth topic)", records.get("auth", 0))
    report("Broker outage", "processes restarted", "none" if after == pids else f"{pids} -> {after}")
    report(
        "Broker outage",
        "log lines during the outage, by process",
        ", ".join(f"{n}: {c}" for n, c in lines_during.items()),
    )
    # Each condition is logged when it starts (and once a minute while it lasts), not per retry or probe
    assert all(count <= MAX_OUTAGE_LOG_LINES for count in lines_during.values()), (
        f"log lines during the outage: {lines_during}"
    )
    assert set(statuses) <= {202, 503}, f"answers other than 202 and 503: {statuses}"
    assert unavailable, "no request saw the outage: nothing answered 503"
    assert all(r[5].get("Retry-After") and r[4].get("code") == 503 for r in unavailable), unavailable[:3]
    assert slowest <= ANSWER_WITHIN, (
        f"{sum(r[2] > ANSWER_WITHIN for r in unavailable)} of {len(unavailable)} 503s took over {ANSWER_WITHIN}s "
        f"(slowest {slowest:.2f}s): {sorted(round(r[2], 2) for r in unavailable)[-10:]}"
    )
    assert ready_status == 503, (ready_status, ready_body)
    assert all(creators[task_id] == 1 for task_id in accepted), "an accepted sign-up has no user, or two"
    assert max(creators.values()) == 1
    assert records.get("auth", 0) >= len(accepted)
    assert after == pids, f"processes were restarted: {pids} -> {after}"
