"""The HTTP gateway, on Dramatiq's StubBroker and a SQLite file per test."""

import dataclasses
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import dramatiq
import pytest
import sqlalchemy as sa
from dramatiq.brokers.stub import StubBroker
from dramatiq.results import ResultTimeout

from broker import DeliveryFailed
from broker.submit import ABANDONED_AFTER
from gateway import create_app
from tasks.store import Store, Task

SIGN_UP = {"name": "Ada Lovelace", "email": "Ada@Example.com"}
PAYMENT = {"userId": 1, "amount": "10.50", "currency": "EUR"}


@pytest.fixture
def store(stub_system):
    """A fresh SQLite database with the schema, used by the gateway and the actors."""
    return stub_system.store


@pytest.fixture
def broker(stub_system):
    """The StubBroker the gateway sends to."""
    assert isinstance(stub_system.broker, StubBroker)
    return stub_system.broker


@pytest.fixture
def app(stub_config, store, broker):
    return create_app(stub_config, broker=broker, store=store)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def worker(broker):
    """A worker that runs the actors (here: answers user lookups)."""
    worker = dramatiq.Worker(broker, worker_threads=2)
    worker.start()
    yield worker
    worker.stop()


def assert_error(response, code: int, status: str) -> dict:
    """Checks that a response is the gateway's JSON error, and returns its body."""
    assert response.status_code == code
    assert response.is_json
    body = response.get_json()
    assert body["code"] == code
    assert body["status"] == status
    assert isinstance(body["message"], str) and body["message"]
    return body


def take(broker, queue: str) -> dramatiq.Message:
    """Takes the next message off a StubBroker queue, as a consumer that finished it would."""
    raw = broker.queues[queue].get_nowait()
    broker.queues[queue].task_done()  # or a later join() of this queue waits for it forever
    return dramatiq.Message.decode(raw)


# Sign-up ----------------------------------------------------------------------------------------


def test_sign_up_is_accepted_and_queued(client, store, broker):
    # When a valid sign-up is posted
    response = client.post("/api/auth/sign-up", json=SIGN_UP)

    # Then it is accepted with the task's status URL
    assert response.status_code == 202
    body = response.get_json()
    assert body["statusUrl"] == f"/api/tasks/{body['taskId']}"
    assert response.headers["Location"] == body["statusUrl"]
    # And one message holds the normalised payload
    assert broker.queues["auth"].qsize() == 1
    message = take(broker, "auth")
    assert message.message_id == body["taskId"]
    assert message.args == ({"name": "Ada Lovelace", "email": "ada@example.com"},)
    # And the task is queued, made when its message was, without a database write
    assert store.get_task(body["taskId"]) is None
    status = client.get(body["statusUrl"]).get_json()
    assert (status["status"], status["kind"]) == ("queued", "create_user")
    made = datetime.fromtimestamp(message.message_timestamp / 1000, UTC)
    assert datetime.fromisoformat(status["createdAt"]) == datetime.fromisoformat(status["updatedAt"]) == made


def test_a_task_id_that_was_altered_is_404(client, store, broker):
    task_id = client.post("/api/auth/sign-up", json=SIGN_UP).get_json()["taskId"]
    altered = task_id[:-1] + ("A" if task_id[-1] != "A" else "B")

    assert client.get(f"/api/tasks/{task_id}").status_code == 200
    assert_error(client.get(f"/api/tasks/{altered}"), 404, "Not Found")


def test_a_task_recorded_by_its_worker_answers_from_the_store(client, store, broker):
    # Given a sign-up its worker has finished
    task_id = client.post("/api/auth/sign-up", json=SIGN_UP).get_json()["taskId"]
    store.set_status(task_id, "create_user", "succeeded", result={"id": 7})

    # Then its status is the worker's
    body = client.get(f"/api/tasks/{task_id}").get_json()
    assert (body["status"], body["result"]) == ("succeeded", {"id": 7})


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"email": "a@example.com"}, "name"),
        ({"name": "", "email": "a@example.com"}, "name"),
        ({"name": "   ", "email": "a@example.com"}, "name"),
        ({"name": "x" * 201, "email": "a@example.com"}, "name"),
        ({"name": "Ada"}, "email"),
        ({"name": "Ada", "email": "not-an-email"}, "email"),
        ({"name": 42, "email": "a@example.com"}, "name"),
        ({"name": "Ada\ud800", "email": "a@example.com"}, "name"),
        ({"name": "Ada\x00", "email": "a@example.com"}, "name"),
        ({"name": "Ada", "email": "\u0130" * 130 + "@example.com"}, "email"),
    ],
)
def test_sign_up_names_each_invalid_field(client, store, broker, payload, field):
    # When an invalid sign-up is posted
    response = client.post("/api/auth/sign-up", json=payload)

    # Then the answer is 422 naming the field, and nothing was sent
    body = assert_error(response, 422, "Unprocessable Entity")
    assert list(body["errors"]["json"]) == [field]
    assert broker.queues["auth"].qsize() == 0


# Payments ---------------------------------------------------------------------------------------


def test_pay_is_accepted(client, store, broker):
    # When a valid payment is posted without an idempotency key
    response = client.post("/api/payments/pay", json=PAYMENT)

    # Then it is accepted, and the message carries the exact amount and no key
    assert response.status_code == 202
    body = response.get_json()
    assert response.headers["Location"] == body["statusUrl"] == f"/api/tasks/{body['taskId']}"
    assert client.get(body["statusUrl"]).get_json()["status"] == "queued"
    message = take(broker, "payments")
    assert message.args == ({"userId": 1, "amount": "10.50", "currency": "EUR"}, None)


def test_repeated_idempotency_key_answers_the_same_task(client, store, broker):
    # Given a payment accepted with an idempotency key
    first = client.post("/api/payments/pay", json=PAYMENT, headers={"Idempotency-Key": "order-42"})

    # When the same request is posted again
    second = client.post("/api/payments/pay", json=PAYMENT, headers={"Idempotency-Key": "order-42"})

    # Then both answers name the same task, and only one message was sent
    assert first.status_code == second.status_code == 202
    assert first.get_json() == second.get_json()
    assert broker.queues["payments"].qsize() == 1
    message = take(broker, "payments")
    assert message.args[1] == "order-42"


def test_a_retry_that_writes_the_amount_otherwise_is_the_same_request(client, store, broker):
    first = client.post("/api/payments/pay", json={**PAYMENT, "amount": "10.5"}, headers={"Idempotency-Key": "o-7"})

    again = client.post("/api/payments/pay", json={**PAYMENT, "amount": 10.50}, headers={"Idempotency-Key": "o-7"})

    assert first.status_code == again.status_code == 202
    assert first.get_json() == again.get_json()
    assert take(broker, "payments").args[0]["amount"] == "10.50"
    assert broker.queues["payments"].qsize() == 0


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
def test_invalid_idempotency_key_is_422(client, store, broker, key):
    # When a payment carries an invalid Idempotency-Key
    response = client.post("/api/payments/pay", json=PAYMENT, headers={"Idempotency-Key": key})

    # Then the answer is 422 naming the header, and nothing was sent
    body = assert_error(response, 422, "Unprocessable Entity")
    assert list(body["errors"]["headers"]) == ["Idempotency-Key"]
    assert broker.queues["payments"].qsize() == 0


def test_an_idempotency_key_reused_for_a_different_payment_is_422_naming_the_header(client, store, broker):
    # Given a payment accepted under a key
    first = client.post("/api/payments/pay", json=PAYMENT, headers={"Idempotency-Key": "order-10"})
    assert first.status_code == 202
    take(broker, "payments")
    # When the same key comes with another amount
    response = client.post(
        "/api/payments/pay", json={**PAYMENT, "amount": "99.00"}, headers={"Idempotency-Key": "order-10"}
    )
    # Then it is refused, naming the header, and nothing more is sent
    body = assert_error(response, 422, "Unprocessable Entity")
    assert list(body["errors"]["headers"]) == ["Idempotency-Key"]
    assert broker.queues["payments"].qsize() == 0


def test_idempotency_key_in_progress_is_409(client, store, broker):
    # Given a task with this key that is still being sent
    store.add_task(task_id="t-in-flight", kind="process_payment", idempotency_key="order-7")

    # When the same key is posted
    response = client.post("/api/payments/pay", json=PAYMENT, headers={"Idempotency-Key": "order-7"})

    # Then the answer is 409, and nothing more was sent
    assert_error(response, 409, "Conflict")
    assert broker.queues["payments"].qsize() == 0


def test_a_key_whose_submission_was_abandoned_sends_that_task_again(client, store, broker):
    # Given a task with this key left "submitting" by a process that died while sending it
    store.add_task(task_id="t-abandoned", kind="process_payment", idempotency_key="order-8")
    with store.engine.begin() as connection:
        connection.execute(
            sa.update(Task)
            .where(Task.id == "t-abandoned")
            .values(updated_at=datetime.now(UTC) - ABANDONED_AFTER - timedelta(seconds=1))
        )

    # When the same key is posted
    response = client.post("/api/payments/pay", json=PAYMENT, headers={"Idempotency-Key": "order-8"})

    # Then it is sent again as the same task (its actor sees it at most twice, as a redelivery)
    assert response.status_code == 202
    assert response.get_json()["taskId"] == "t-abandoned"
    assert take(broker, "payments").message_id == "t-abandoned"
    assert store.get_task("t-abandoned")["status"] == "queued"


def test_a_taken_over_task_whose_send_fails_keeps_its_key(client, store, broker, monkeypatch):
    # Given a task with this key abandoned by a process that died while sending it (Kafka may have it)
    store.add_task(task_id="t-abandoned", kind="process_payment", idempotency_key="order-9")
    with store.engine.begin() as connection:
        connection.execute(
            sa.update(Task)
            .where(Task.id == "t-abandoned")
            .values(updated_at=datetime.now(UTC) - ABANDONED_AFTER - timedelta(seconds=1))
        )

    def down(message, *, delay=None):
        raise DeliveryFailed("down")

    # When the same key is posted while Kafka is down
    monkeypatch.setattr(broker, "enqueue", down)
    response = client.post("/api/payments/pay", json=PAYMENT, headers={"Idempotency-Key": "order-9"})

    # Then the answer is a 503 saying Kafka may have it, and the key still names that task: a retry
    # sends it again, as the same task, never a new one
    assert response.status_code == 503
    assert response.get_json()["taskId"] == "t-abandoned"
    assert store.get_task("t-abandoned")["status"] == "unknown"
    monkeypatch.undo()
    again = client.post("/api/payments/pay", json=PAYMENT, headers={"Idempotency-Key": "order-9"})
    assert (again.status_code, again.get_json()["taskId"]) == (202, "t-abandoned")
    assert take(broker, "payments").message_id == "t-abandoned"


def refuse(broker, monkeypatch, *, maybe_stored: bool) -> list[str]:
    """Makes the broker's sends fail as Kafka's would: ``maybe_stored`` after a timeout. Returns the ids sent."""
    sent = []

    def enqueue(message, *, delay=None):
        sent.append(message.message_id)
        raise DeliveryFailed("Kafka did not acknowledge a record: Local: Message timed out", maybe_stored=maybe_stored)

    monkeypatch.setattr(broker, "enqueue", enqueue)
    return sent


@pytest.mark.parametrize("path, body", [("/api/auth/sign-up", SIGN_UP), ("/api/payments/pay", PAYMENT)])
def test_a_send_kafka_may_have_stored_is_a_503_with_the_task_id_and_a_resend_with_the_key_sends_it_again(
    client, store, broker, monkeypatch, path, body
):
    # Given Kafka that does not confirm a send in time (it may have stored it)
    sent = refuse(broker, monkeypatch, maybe_stored=True)
    # When a request with a key is sent
    first = client.post(path, json=body, headers={"Idempotency-Key": "k-1"})
    # Then the 503 says the outcome is unknown, and names the task, which shows as unknown
    error = assert_error(first, 503, "Service Unavailable")
    assert error["taskId"] == sent[0] and error["statusUrl"] == f"/api/tasks/{sent[0]}"
    assert "may have stored it" in error["message"] and "same Idempotency-Key" in error["message"]
    assert client.get(error["statusUrl"]).get_json()["status"] == "unknown"
    # And sent again with the key, once Kafka confirms, it is the same task
    monkeypatch.undo()
    again = client.post(path, json=body, headers={"Idempotency-Key": "k-1"})
    assert (again.status_code, again.get_json()["taskId"]) == (202, sent[0])
    assert client.get(again.get_json()["statusUrl"]).get_json()["status"] == "queued"


def test_an_unkeyed_send_kafka_may_have_stored_is_recorded_as_unknown(client, store, broker, monkeypatch):
    sent = refuse(broker, monkeypatch, maybe_stored=True)
    response = client.post("/api/payments/pay", json=PAYMENT)
    error = assert_error(response, 503, "Service Unavailable")
    assert error["taskId"] == sent[0] and "without an Idempotency-Key, it is a new task" in error["message"]
    assert store.get_task(sent[0])["status"] == "unknown"


def test_a_send_kafka_certainly_did_not_store_is_a_503_that_names_no_task(client, store, broker, monkeypatch):
    sent = refuse(broker, monkeypatch, maybe_stored=False)
    response = client.post("/api/payments/pay", json=PAYMENT, headers={"Idempotency-Key": "k-2"})
    error = assert_error(response, 503, "Service Unavailable")
    assert "taskId" not in error and "nothing was sent" in error["message"]
    assert store.get_task(sent[0]) is None  # the key is free again


def test_a_repeated_idempotency_key_on_sign_up_answers_the_same_task(client, store, broker):
    first = client.post("/api/auth/sign-up", json=SIGN_UP, headers={"Idempotency-Key": "signup-1"})
    second = client.post("/api/auth/sign-up", json=SIGN_UP, headers={"Idempotency-Key": "signup-1"})
    assert first.status_code == second.status_code == 202
    assert first.get_json() == second.get_json()
    assert broker.queues["auth"].qsize() == 1


def test_a_key_with_a_comma_which_two_headers_make_is_422(client, store, broker):
    response = client.post("/api/payments/pay", json=PAYMENT, headers={"Idempotency-Key": "order-1, order-2"})
    body = assert_error(response, 422, "Unprocessable Entity")
    assert list(body["errors"]["headers"]) == ["Idempotency-Key"]
    assert broker.queues["payments"].qsize() == 0


def test_a_task_kafka_took_is_202_even_if_its_status_cannot_be_recorded(client, store, broker, monkeypatch):
    # Given a database that fails the "queued" write (a 503 now would have the client send it twice)
    def locked(self, task_id, kind):
        raise sa.exc.OperationalError("UPDATE tasks", {}, Exception("database is locked"))

    monkeypatch.setattr(Store, "mark_queued", locked)

    # When a payment is posted with a key (only then is a task recorded before its worker runs it),
    # then it is accepted, since Kafka has it, and shows as queued
    response = client.post("/api/payments/pay", json=PAYMENT, headers={"Idempotency-Key": "order-locked"})
    assert response.status_code == 202
    task_id = response.get_json()["taskId"]
    assert take(broker, "payments").message_id == task_id
    assert client.get(f"/api/tasks/{task_id}").get_json()["status"] == "queued"


@pytest.mark.parametrize(
    "body",
    ['{"userId": 1' + "1" * 5000 + "}", "[" * 20_000 + "]" * 20_000],
    ids=["integer-of-5000-digits", "arrays-nested-20000-deep"],
)
def test_json_that_python_cannot_read_is_400(client, store, broker, body):
    response = client.post("/api/payments/pay", data=body, content_type="application/json")

    body = assert_error(response, 400, "Bad Request")
    assert body["errors"] == {"json": ["Invalid JSON body."]}
    assert broker.queues["payments"].qsize() == 0


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"userId": None}, "userId"),
        ({"userId": 0}, "userId"),
        ({"userId": -1}, "userId"),
        ({"userId": "1"}, "userId"),
        ({"userId": 1.5}, "userId"),
        ({"userId": 2**31}, "userId"),
        ({"amount": 0}, "amount"),
        ({"amount": -1}, "amount"),
        ({"amount": 1.234}, "amount"),
        ({"amount": "1000000.01"}, "amount"),
        ({"amount": "abc"}, "amount"),
        ({"amount": "NaN"}, "amount"),
        ({"currency": "XXX"}, "currency"),
        ({"currency": "usd"}, "currency"),
    ],
)
def test_pay_names_each_invalid_field(client, store, broker, changes, field):
    # When a payment with one invalid field is posted
    response = client.post("/api/payments/pay", json={**PAYMENT, **changes})

    # Then the answer is 422 naming that field, and nothing was sent
    body = assert_error(response, 422, "Unprocessable Entity")
    assert list(body["errors"]["json"]) == [field]
    assert broker.queues["payments"].qsize() == 0


def test_pay_without_amount_names_it(client, store, broker):
    response = client.post("/api/payments/pay", json={"userId": 1})

    body = assert_error(response, 422, "Unprocessable Entity")
    assert body["errors"]["json"] == {"amount": ["Missing data for required field."]}


# Malformed requests -----------------------------------------------------------------------------


def test_malformed_json_is_400(client, store, broker):
    response = client.post("/api/auth/sign-up", data='{"name": "Ada",', content_type="application/json")

    body = assert_error(response, 400, "Bad Request")
    assert body["errors"] == {"json": ["Invalid JSON body."]}
    assert broker.queues["auth"].qsize() == 0


def test_body_that_is_not_json_is_415(client, store, broker):
    response = client.post(
        "/api/auth/sign-up", data="name=Ada&email=a@example.com", content_type="application/x-www-form-urlencoded"
    )

    assert_error(response, 415, "Unsupported Media Type")
    assert broker.queues["auth"].qsize() == 0


def test_body_over_64_kib_is_413(client, store, broker):
    response = client.post("/api/auth/sign-up", json={"name": "x" * (64 * 1024), "email": "a@example.com"})

    assert_error(response, 413, "Request Entity Too Large")
    assert broker.queues["auth"].qsize() == 0


def test_unknown_route_is_404_json(client):
    response = client.get("/api/nothing-here")

    assert_error(response, 404, "Not Found")


def test_wrong_method_is_405_json(client):
    response = client.get("/api/auth/sign-up")

    assert_error(response, 405, "Method Not Allowed")
    assert "POST" in response.headers["Allow"]


# Task statuses ----------------------------------------------------------------------------------


def test_unknown_task_is_404(client, store):
    response = client.get("/api/tasks/no-such-task")

    body = assert_error(response, 404, "Not Found")
    assert "no-such-task" in body["message"]


def test_known_task_answers_its_status(client, store):
    # Given a finished task
    store.add_task(task_id="t-done", kind="create_user")
    store.set_status("t-done", "create_user", "succeeded", result={"id": 1})

    # When its status is asked for
    response = client.get("/api/tasks/t-done")

    # Then it is answered from the store
    assert response.status_code == 200
    body = response.get_json()
    assert {k: body[k] for k in ("taskId", "kind", "status", "result", "error")} == {
        "taskId": "t-done",
        "kind": "create_user",
        "status": "succeeded",
        "result": {"id": 1},
        "error": None,
    }
    assert body["createdAt"] and body["updatedAt"]


def test_task_being_submitted_shows_as_queued(client, store):
    store.add_task(task_id="t-sending", kind="create_user")

    response = client.get("/api/tasks/t-sending")

    assert response.status_code == 200
    assert response.get_json()["status"] == "queued"


# Kafka unavailable ------------------------------------------------------------------------------


def test_kafka_down_is_503_with_retry_after_and_no_task(client, store, broker, monkeypatch):
    # Given a broker that Kafka does not acknowledge
    sent = []

    def enqueue(message, *, delay=None):
        sent.append(message.message_id)
        raise DeliveryFailed("down")

    monkeypatch.setattr(broker, "enqueue", enqueue)

    # When a sign-up is posted
    response = client.post("/api/auth/sign-up", json=SIGN_UP)

    # Then the answer is 503 with Retry-After, and the task was forgotten
    assert_error(response, 503, "Service Unavailable")
    assert response.headers["Retry-After"] == "5"
    assert len(sent) == 1
    assert store.get_task(sent[0]) is None


def test_sign_ups_write_nothing_to_the_database(client, store, broker, monkeypatch):
    # Given the key of the deployment's task ids, made by an earlier request
    client.post("/api/auth/sign-up", json=SIGN_UP)
    writes = []
    monkeypatch.setattr(Store, "_writing", lambda self: writes.append(1) or pytest.fail("a sign-up wrote"))

    # When sign-ups are posted, then they are accepted without a write
    for _ in range(3):
        assert client.post("/api/auth/sign-up", json=SIGN_UP).status_code == 202
    assert writes == []


# Users ------------------------------------------------------------------------------------------


def test_user_lookup_timing_out_is_504(stub_config, store, broker):
    # Given no worker answers, and a short lookup timeout
    config = dataclasses.replace(stub_config, user_lookup_timeout_ms=100)
    client = create_app(config, broker=broker, store=store).test_client()

    # When a user is asked for
    response = client.get("/api/users/1")

    # Then the answer is 504
    assert_error(response, 504, "Gateway Timeout")


def test_user_lookup_timeout_is_504_whatever_raises_it(client, store, broker, monkeypatch):
    def get_result(self, **kwargs):
        raise ResultTimeout("timed out waiting for result")

    monkeypatch.setattr(dramatiq.Message, "get_result", get_result)

    assert_error(client.get("/api/users/1"), 504, "Gateway Timeout")


def test_unknown_user_is_404(client, store, worker):
    response = client.get("/api/users/999")

    body = assert_error(response, 404, "Not Found")
    assert "999" in body["message"]


def test_known_user_is_200(client, store, worker):
    # Given a stored user
    user = store.create_user(name="Ada Lovelace", email="ada@example.com", task_id="t1")

    # When the user is asked for
    response = client.get(f"/api/users/{user['id']}")

    # Then the auth service's answer is returned
    assert response.status_code == 200
    assert response.get_json() == {"id": user["id"], "name": "Ada Lovelace", "email": "ada@example.com"}


def test_user_id_beyond_any_stored_is_404_without_a_lookup(client, store, broker):
    response = client.get(f"/api/users/{2**63}")

    assert_error(response, 404, "Not Found")
    assert broker.queues["auth"].qsize() == 0


# Unexpected errors ------------------------------------------------------------------------------


def test_unexpected_error_is_500_json(client, store, monkeypatch, caplog):
    def get_task(self, task_id):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(Store, "get_task", get_task)

    response = client.get("/api/tasks/t1")

    body = assert_error(response, 500, "Internal Server Error")
    assert "secret detail" not in body["message"]
    assert "secret detail" in caplog.text  # logged for the operators


# Health -----------------------------------------------------------------------------------------


def test_healthz(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_with_stub_broker(client, store):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.get_json() == {"kafka": "ok", "database": "ok"}


def test_readyz_names_the_database_when_it_fails(client, store, monkeypatch):
    def ping(self):
        raise ConnectionError("no database")

    monkeypatch.setattr(Store, "ping", ping)

    response = client.get("/readyz")

    body = assert_error(response, 503, "Service Unavailable")
    assert response.headers["Retry-After"] == "5"
    assert body["errors"]["kafka"] == "ok"
    assert body["errors"]["database"].startswith("unavailable")


def test_readyz_is_503_while_the_database_schema_is_behind_the_code(client, store):
    # Given a database a release has not migrated yet
    with store.engine.begin() as connection:
        connection.execute(sa.text("DROP INDEX ix_tasks_status_updated_at"))  # what 0002 adds
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
    # Then the process is not ready, and says why
    body = assert_error(client.get("/readyz"), 503, "Service Unavailable")
    assert body["errors"]["database"] == "unavailable (SchemaBehind)"
    # And once migrated, it is
    store.migrate()
    assert client.get("/readyz").status_code == 200


def test_readiness_logs_an_outage_once_in_one_line_not_a_traceback_per_probe(client, store, monkeypatch, caplog):
    caplog.set_level("INFO", logger="gateway.health")

    def ping(self):
        raise ConnectionError("no database")

    # When probes find the database down, again and again, and then up
    monkeypatch.setattr(Store, "ping", ping)
    for _ in range(5):
        assert client.get("/readyz").status_code == 503
    monkeypatch.undo()
    assert client.get("/readyz").status_code == 200
    # Then the outage and the recovery are logged once each, with no traceback
    lines = [r for r in caplog.records if r.name == "gateway.health"]
    assert [r.getMessage() for r in lines] == [
        "Readiness: database is unavailable: ConnectionError: no database",
        "Readiness: database is available again.",
    ]
    assert all(r.exc_info is None for r in lines)


def test_a_database_outage_is_logged_once_not_per_request(client, store, monkeypatch, caplog):
    def down(self, *args, **kwargs):
        raise sa.exc.OperationalError("SELECT", {}, Exception("could not connect"))

    # When requests find the database down, again and again
    monkeypatch.setattr(Store, "get_task", down)
    for _ in range(5):
        response = client.get("/api/tasks/01a21beb-ea51-7492-b780-b18f6c1a96e3.f9s0rD8AhGEun1nX4Xe55L1vcec")
        assert response.status_code == 503 and response.get_json()["message"].startswith("The database")
    # Then the outage is logged once, in one line
    lines = [r for r in caplog.records if r.name == "gateway.errors"]
    assert [r.getMessage() for r in lines] == [
        "The database, as the web process sees it: unavailable, answering 503: could not connect"
    ]
    assert lines[0].exc_info is None


# API documentation ------------------------------------------------------------------------------


def test_openapi_lists_paths_and_error_answers(client):
    response = client.get("/api/openapi.json")

    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"] == "3.1.0"
    assert spec["info"] == {"title": "kafka-tasks", "version": "1"}
    assert set(spec["paths"]) == {
        "/api/auth/sign-up",
        "/api/payments/pay",
        "/api/tasks/{task_id}",
        "/api/users/{user_id}",
        "/healthz",
        "/readyz",
    }
    pay = spec["paths"]["/api/payments/pay"]["post"]["responses"]
    assert {"202", "400", "409", "413", "415", "422", "503"} <= set(pay)
    assert "Retry-After" in pay["503"]["headers"]
    assert {"200", "404", "503", "504"} <= set(spec["paths"]["/api/users/{user_id}"]["get"]["responses"])


def test_swagger_ui(client):
    response = client.get("/api/docs")

    assert response.status_code == 200
    assert response.content_type.startswith("text/html")
    assert "swagger-ui" in response.get_data(as_text=True)


# WSGI entry point -------------------------------------------------------------------------------


def test_wsgi_module_freezes_what_it_built(tmp_path):
    # In a process of its own, as gunicorn's workers import it: frozen objects are never collected
    script = "import gc, gateway.wsgi; print(gc.get_freeze_count())"
    env = {**os.environ, "KAFKA_TASKS_BROKER": "stub", "DATABASE_URL": f"sqlite:///{tmp_path / 'wsgi.db'}"}

    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True
    )

    assert int(out.stdout) > 10_000
