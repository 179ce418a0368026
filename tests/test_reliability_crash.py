"""Reliability, scenario 1: the payments worker is SIGKILLed twice with 2,000 payments in flight."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter

import pytest

from tests.reliability import report
from tests.services import (
    consumer_lag,
    payment_counts,
    task_statuses,
    topic_records,
)

pytestmark = pytest.mark.reliability

# Scenario 1: crash -------------------------------------------------------------------------------

#: Payments in flight.
PAYMENTS = 2_000

#: SIGKILLs of the payments worker.
KILLS = 2


@pytest.mark.timeout(300)
def test_sigkilled_payments_worker_records_every_payment_exactly_once(services, kafka):
    seed = int(os.environ.get("RELIABILITY_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)

    def recorded() -> int:
        return sum(payment_counts(services.store).values())

    # Given a user, and 2,000 payments for them in Kafka, each with its own idempotency key
    user = services.sign_up("Ada", "ada@example.com")
    keys = [f"crash-{n}" for n in range(PAYMENTS)]
    started = time.monotonic()
    task_ids = services.enqueue_payments(user["id"], keys)

    # When the payments worker is SIGKILLed twice, at random points of the stream, and restarted
    at_kill = []
    for kill in range(KILLS):
        # A random point between a tenth and a third of what is left, so that every kill finds work in flight.
        done = recorded()
        point = done + rng.randint((PAYMENTS - done) // 10, (PAYMENTS - done) // 3)
        services.wait_until(
            f"{point} payments recorded before SIGKILL #{kill + 1}",
            lambda point=point: recorded() >= point,
            lambda: f"{recorded()} recorded",
            timeout=120,
        )
        services.signal("payments", signal.SIGKILL)
        services.wait_gone("payments", timeout=30)
        at_kill.append(recorded())
        services.launch("payments")

    # Then, after the restarts, every payment is recorded exactly once and every task succeeded
    services.wait_until(
        f"all {PAYMENTS} payments recorded after {KILLS} SIGKILLs",
        lambda: recorded() >= PAYMENTS,
        lambda: f"{recorded()} recorded",
        timeout=180,
    )
    services.wait_until(
        "every payment task finished",
        lambda: set(task_statuses(services.store, task_ids)) <= {"succeeded", "failed", "dead"},
        lambda: task_statuses(services.store, task_ids),
        timeout=60,
    )
    services.wait_until(
        "the payments groups committed everything",
        lambda: not any(consumer_lag(kafka, services.prefix, ["payments"]).values()),
        lambda: consumer_lag(kafka, services.prefix, ["payments"]),
        timeout=60,
    )
    took = time.monotonic() - started
    counts = payment_counts(services.store)
    statuses = task_statuses(services.store, task_ids)
    records = topic_records(kafka, services.prefix)
    log = services.log_text("payments")
    absorbed = log.count(" was already recorded")

    report("Crash", "payments in flight", PAYMENTS)
    report("Crash", "SIGKILLs of the payments worker (seed)", f"{KILLS} ({seed})")
    report("Crash", "payments recorded when killed", ", ".join(map(str, at_kill)))
    report("Crash", "payment rows / distinct keys in the database", f"{sum(counts.values())} / {len(counts)}")
    report("Crash", "duplicate deliveries absorbed by idempotency", absorbed)
    report("Crash", "task statuses", dict(statuses))
    report(
        "Crash",
        "records in Kafka: payments / retries (payments.DQ.*) / dead letters (payments.XQ)",
        f"{records.get('payments', 0)} / "
        f"{sum(n for t, n in records.items() if t.startswith('payments.DQ.'))} / {records.get('payments.XQ', 0)}",
    )
    report("Crash", "first payment in Kafka to all recorded (s)", f"{took:.1f}")
    assert set(counts) == set(keys), (
        f"missing: {sorted(set(keys) - set(counts))[:20]}, unexpected: {sorted(set(counts) - set(keys))[:20]}"
    )
    assert max(counts.values()) == 1, f"recorded twice: {[k for k, n in counts.items() if n > 1][:20]}"
    assert statuses == Counter({"succeeded": PAYMENTS}), statuses
    assert records.get("payments") == PAYMENTS, records
    assert records.get("payments.XQ", 0) == 0, records
    assert all(n < at_kill[i + 1] for i, n in enumerate(at_kill[:-1])) and at_kill[-1] < PAYMENTS, (
        f"a SIGKILL found nothing in flight: recorded at the kills {at_kill}"
    )
