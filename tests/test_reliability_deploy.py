"""Reliability, scenario 3: a deploy.  SIGTERM goes to every process of both worker groups at once
(as Heroku sends it to a dyno) while payments stream in, and the workers are started again.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from tests.reliability import report
from tests.services import (
    Stream,
    consumer_lag,
    payment_counts,
    task_statuses,
    topic_records,
)

pytestmark = pytest.mark.reliability

#: Payments already in Kafka when the deploy starts, so that the workers have plenty in hand.
BACKLOG = 1_000

#: Payments sent through the gateway during the deploy: concurrent clients, and per second in all.
CLIENTS, RATE = 2, 10

#: How long the workers may take to exit after SIGTERM (Heroku SIGKILLs at 30 s).
EXIT_WITHIN = 25

#: The worker process types.
WORKERS = ("auth", "payments")


@pytest.mark.timeout(240)
def test_sigterm_to_the_worker_groups_mid_stream_loses_and_doubles_nothing(services, kafka):

    def recorded() -> int:
        return sum(payment_counts(services.store).values())

    # Given a backlog of payments in Kafka, and more streaming in through the gateway
    user = services.sign_up("Ada", "ada@example.com")
    backlog = [f"backlog-{n}" for n in range(BACKLOG)]
    task_ids = set(services.enqueue_payments(user["id"], backlog))
    stream = Stream(
        services.base,
        lambda n: (
            "POST",
            "/api/payments/pay",
            {"userId": user["id"], "amount": "2.00"},
            {"Idempotency-Key": f"stream-{n}"},
        ),
        clients=CLIENTS,
        rate=RATE,
    ).start()
    services.wait_until(
        "200 payments recorded before the deploy",
        lambda: recorded() >= 200,
        lambda: f"{recorded()} recorded",
        timeout=120,
    )

    # When SIGTERM goes to every process of both worker groups, as the platform sends it
    members = {name: services.members(name) for name in WORKERS}
    for name in WORKERS:
        services.signal(name, signal.SIGTERM)
    exits = services.wait_gone(*WORKERS, timeout=EXIT_WITHIN + 15)
    at_stop = recorded()
    # and the new release's workers start
    for name in WORKERS:
        services.launch(name)
    time.sleep(3)
    results = stream.stop()

    # Then every payment, from the backlog and the stream, is recorded exactly once
    statuses = Counter(r[3] if r[6] is None else r[6].split(":")[0] for r in results)
    streamed = {r[4]["taskId"]: f"stream-{r[0]}" for r in results if r[3] == 202}
    task_ids |= set(streamed)
    expected = set(backlog) | set(streamed.values())
    services.wait_until(
        f"all {len(expected)} payments recorded after the restart",
        lambda: recorded() >= len(expected),
        lambda: f"{recorded()} recorded",
        timeout=120,
    )
    services.wait_until(
        "every payment task succeeded",
        lambda: task_statuses(services.store, task_ids)["succeeded"] == len(task_ids),
        lambda: task_statuses(services.store, task_ids),
        timeout=60,
    )
    services.wait_until(
        "every group committed everything",
        lambda: not any(consumer_lag(kafka, services.prefix).values()),
        lambda: consumer_lag(kafka, services.prefix),
        timeout=60,
    )
    counts = payment_counts(services.store)
    records = topic_records(kafka, services.prefix)
    payments_log = services.log_text("payments")
    redelivered = payments_log.count(" was already recorded")
    # A payment whose get_user went unanswered while auth restarted is retried through a delay
    # topic, and so comes back to the payments topic once more.
    retried = payments_log.count("Retrying message ")

    report(
        "Deploy", "worker processes signalled (auth, payments)", f"{len(members['auth'])}, {len(members['payments'])}"
    )
    for name in WORKERS:
        report("Deploy", f"{name}: SIGTERM to exit (s), exit status", f"{exits[name][1]:.1f}, {exits[name][0]}")
    report("Deploy", "payments recorded at the stop / in all", f"{at_stop} / {sum(counts.values())}")
    report("Deploy", "gateway answers during the deploy", dict(statuses))
    report("Deploy", "payments run again after the restart (already recorded)", redelivered)
    report(
        "Deploy",
        "retries through the delay topics (payments.DQ.*)",
        sum(n for t, n in records.items() if t.startswith("payments.DQ.")),
    )
    for name in WORKERS:
        status, took = exits[name]
        assert took <= EXIT_WITHIN, f"{name} took {took:.1f}s to exit after SIGTERM\n{services.log(name)}"
        assert status == 0, f"{name} exited with {status} after SIGTERM\n{services.log(name)}"
    assert set(statuses) == {202}, f"the gateway answered {statuses} during the deploy"
    assert at_stop < len(expected), "the stop found nothing in flight"
    assert set(counts) == expected, f"missing: {sorted(expected - set(counts))[:20]}"
    assert max(counts.values()) == 1, f"recorded twice: {[k for k, n in counts.items() if n > 1][:20]}"
    assert records.get("payments") == len(expected) + retried, (records, retried)
    assert records.get("payments.XQ", 0) == 0, records
    assert redelivered == 0, f"{redelivered} finished payments ran again after a clean SIGTERM stop"
