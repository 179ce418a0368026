"""Reliability, scenario 7: Kafka freezes (stalls without dying) under a stream of sign-ups and payments.

The broker's JVM is stopped with SIGSTOP for longer than a send may wait: sends time out, and some
of them after their record reached Kafka.  Clients send every request with an Idempotency-Key and
send it again, with the same key, after any 503, as a careful client does; the gateway says which
503s may have stored the task.  Nothing may run twice: one user per email, one payment per key.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from tests.reliability import report
from tests.services import Services, payment_counts, task_statuses, user_creators
from tests.system import call

pytestmark = pytest.mark.reliability

#: How long a send may wait for Kafka here (ms), and how long the broker is frozen (s): long enough
#: for sends made while it is frozen to time out before it goes on, and then store what they sent.
DELIVERY_TIMEOUT_MS, FROZEN = 2_000, 8

#: Logical requests per second, and the clients that send them.
RATE, CLIENTS = 16, 8

#: How long a client keeps sending one request again after 503s before it gives up (s).
PATIENCE = 90


class Client:
    """Sends logical requests, each again with its key after every 503, until it is accepted."""

    def __init__(self, base: str, user_id: int) -> None:
        self.base, self.user_id = base, user_id
        #: Every answer: (n, status, kind), kind being "accepted", "not stored", "unknown" or the status.
        self.answers: list[tuple[int, int, str]] = []
        #: The task id each logical request was accepted as, and every id an answer named for it.
        self.accepted: dict[int, str] = {}
        self.named: dict[int, set[str]] = {}
        self.lock = threading.Lock()

    def request(self, n: int) -> tuple[str, dict, dict]:
        key = {"Idempotency-Key": f"stall-{n}"}
        if n % 2:
            return "/api/payments/pay", {"userId": self.user_id, "amount": "2.00"}, key
        return "/api/auth/sign-up", {"name": f"User {n}", "email": f"stall{n}@example.com"}, key

    def send(self, n: int, frozen_at: list) -> None:
        path, body, headers = self.request(n)
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            try:
                status, answer, _ = call("POST", f"{self.base}{path}", body, headers)
            except OSError:
                status, answer = None, {}
            kind = {202: "accepted", 503: "unknown" if "taskId" in (answer or {}) else "not stored"}.get(
                status, str(status)
            )
            with self.lock:
                self.answers.append((n, status, kind))
                if "taskId" in (answer or {}):
                    self.named.setdefault(n, set()).add(answer["taskId"])
                if status == 202:
                    self.accepted[n] = answer["taskId"]
            if status != 503 and status is not None:
                return
            time.sleep(0.3)


@pytest.fixture
def services(own_kafka, tmp_path):
    """The system on this test's own Kafka, which it freezes (overrides conftest's)."""
    with Services(
        own_kafka.bootstrap_servers, tmp_path, KAFKA_DELIVERY_TIMEOUT_MS=str(DELIVERY_TIMEOUT_MS)
    ) as services:
        yield services


@pytest.mark.timeout(300)
def test_a_frozen_broker_makes_resent_requests_run_once(own_kafka, services):
    user = services.sign_up("Ada", "ada@example.com")
    client = Client(services.base, user["id"])
    threads: list[threading.Thread] = []
    frozen_at: list[float] = []

    def stream(count: int, start: int) -> None:
        for i in range(count):
            n = start + i
            thread = threading.Thread(target=client.send, args=(n, frozen_at), daemon=True)
            thread.start()
            threads.append(thread)
            time.sleep(1 / RATE)

    # Given a stream of keyed sign-ups and payments
    stream(3 * RATE, 0)
    # When the broker freezes for longer than a send may wait, while the stream goes on
    own_kafka.freeze()
    frozen_at.append(time.monotonic())
    stream(FROZEN * RATE, 3 * RATE)
    own_kafka.thaw()
    # And goes on once it is back
    stream(3 * RATE, (3 + FROZEN) * RATE)
    for thread in threads:
        thread.join(PATIENCE + 30)
    logical = (6 + FROZEN) * RATE

    # Then every request was accepted in the end, each as one task whatever the answers before
    assert sorted(client.accepted) == list(range(logical)), sorted(set(range(logical)) - set(client.accepted))[:10]
    renamed = {n: ids for n, ids in client.named.items() if len(ids) > 1}
    assert not renamed, f"requests named as more than one task: {list(renamed.items())[:5]}"
    # And, once all ran, nothing ran twice: one user per sign-up, one payment per key
    accepted = set(client.accepted.values())
    services.wait_until(
        f"all {len(accepted)} accepted tasks succeeded",
        lambda: task_statuses(services.store, accepted)["succeeded"] == len(accepted),
        lambda: task_statuses(services.store, accepted),
        timeout=120,
        logs=("auth", "payments", "web"),
    )
    payments = payment_counts(services.store)
    users = user_creators(services.store)
    doubled = sum(count - 1 for count in payments.values() if count > 1) + sum(
        count - 1 for count in users.values() if count > 1
    )
    answers = Counter(kind for _, _, kind in client.answers)
    sent_while_frozen = sum(1 for n, _, _ in client.answers if 3 * RATE <= n < (3 + FROZEN) * RATE)
    report("Stalled broker", "broker frozen (SIGSTOP) for (s)", FROZEN)
    report("Stalled broker", "logical requests (each resent with its key after a 503)", logical)
    report("Stalled broker", "sends while frozen (with their resends)", sent_while_frozen)
    report(
        "Stalled broker",
        "answers: 202 / 503 not stored / 503 outcome unknown / other",
        f"{answers['accepted']} / {answers['not stored']} / {answers['unknown']} / "
        f"{sum(n for kind, n in answers.items() if kind not in ('accepted', 'not stored', 'unknown'))}",
    )
    report("Stalled broker", "tasks run twice (a second user or payment)", doubled)
    assert set(answers) <= {"accepted", "not stored", "unknown"}, answers
    assert answers["unknown"] + answers["not stored"] > 0, "no send met the frozen broker"
    assert doubled == 0
    assert sum(payments.values()) == logical // 2
    assert sum(users.values()) == logical // 2 + 1
