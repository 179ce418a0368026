"""Actor logic on Dramatiq's StubBroker: users, payments, statuses and idempotency."""

from __future__ import annotations

import logging

import dramatiq
import pytest

from broker.dlq import REPLAYED_OPTION
from broker.taskids import from_millis
from tasks.auth import create_user, get_user
from tasks.payments import process_payment
from tests.eventually import eventually


@pytest.fixture
def store(stub_system):
    return stub_system.store


@pytest.fixture
def broker(stub_system):
    return stub_system.broker


def run_workers(broker, *queues: str, threads: int = 4) -> dramatiq.Worker:
    worker = dramatiq.Worker(broker, queues=set(queues), worker_threads=threads, worker_timeout=50)
    worker.start()
    return worker


@pytest.fixture
def workers(store, broker):
    worker = run_workers(broker, "auth", "payments")
    yield
    worker.stop()


def wait_for_status(store, task_id: str, *statuses: str, timeout: float = 10) -> dict:
    def reached():
        task = store.get_task(task_id)
        return task if task is not None and task["status"] in statuses else None

    return eventually(
        reached, timeout=timeout, what=f"task {task_id} to reach {statuses}", progress=lambda: store.get_task(task_id)
    )


def sign_up(store, name="Ada", email="ada@example.com") -> dict:
    message = create_user.send({"name": name, "email": email})
    return wait_for_status(store, message.message_id, "succeeded", "failed", "dead")


def test_create_user_stores_the_user_and_succeeds(store, workers):
    task = sign_up(store)
    assert task["status"] == "succeeded"
    assert store.get_user(task["result"]["id"]) == {
        "id": task["result"]["id"],
        "name": "Ada",
        "email": "ada@example.com",
    }


def test_a_tasks_row_keeps_the_time_its_message_was_made(store, workers, broker):
    message = create_user.message({"name": "Ada", "email": "ada@example.com"})
    message = message.copy(message_timestamp=message.message_timestamp - 60_000)  # made a minute ago

    broker.enqueue(message)

    task = wait_for_status(store, message.message_id, "succeeded")
    assert task["createdAt"] == from_millis(message.message_timestamp)
    assert task["updatedAt"] > task["createdAt"]


def test_a_message_with_a_timestamp_no_date_holds_still_gets_its_status(store, workers, broker):
    # Given a record produced by hand, stamped 3 billion years from now
    message = create_user.message({"name": "Ada", "email": "ada@example.com"}).copy(message_timestamp=10**20)

    broker.enqueue(message)

    # Then its row says when it was first recorded instead
    task = wait_for_status(store, message.message_id, "succeeded")
    assert task["createdAt"] <= task["updatedAt"]


def test_a_redelivered_create_user_adds_no_second_user(store, workers, broker):
    message = create_user.message({"name": "Ada", "email": "ada@example.com"})
    broker.enqueue(message)
    broker.enqueue(message)  # the same message id, as after a crash
    broker.join("auth", fail_fast=False)
    assert broker.dead_letters == []
    assert store.get_user(1)["email"] == "ada@example.com"
    assert store.get_user(2) is None


def test_a_second_sign_up_with_a_registered_email_fails_for_good(store, workers, broker):
    sign_up(store)
    task = sign_up(store, name="Eve", email="ADA@example.com")
    assert (task["status"], task["error"]) == ("failed", "email already registered")
    broker.join("auth", fail_fast=False)
    assert [m.options.get("retries", 0) for m in broker.dead_letters] == [0]


def test_an_invalid_sign_up_payload_fails_for_good(store, workers):
    task = sign_up(store, email="not-an-email")
    assert task["status"] == "failed", task["error"]
    assert "email" in task["error"]


def test_a_task_id_longer_than_the_store_keeps_fails_for_good(store, workers, broker):
    message = create_user.message({"name": "Ada", "email": "ada@example.com"}).copy(message_id="x" * 65)
    broker.enqueue(message)
    broker.join("auth", fail_fast=False)
    [dead] = broker.dead_letters
    assert (dead.message_id, dead.options.get("retries", 0)) == ("x" * 65, 0)
    assert store.get_user(1) is None


def test_get_user_returns_the_user_or_none(store, workers):
    user = sign_up(store)["result"]
    assert get_user.send(user["id"]).get_result(block=True, timeout=5_000) == user
    assert get_user.send(999).get_result(block=True, timeout=5_000) is None


def test_a_payment_is_recorded_with_the_users_name(store, workers, caplog):
    user = sign_up(store)["result"]
    caplog.set_level(logging.INFO, logger="tasks.payments")
    message = process_payment.send({"userId": user["id"], "amount": "12.50", "currency": "EUR"}, None)
    task = wait_for_status(store, message.message_id, "succeeded")
    assert task["result"]["userName"] == "Ada"
    assert [(p["userId"], p["amount"], p["currency"]) for p in store.payments()] == [(user["id"], "12.50", "EUR")]
    assert "process payment for user Ada - amount: 12.50" in caplog.messages


def test_a_redelivered_payment_is_recorded_once(store, workers, broker):
    user = sign_up(store)["result"]
    message = process_payment.message({"userId": user["id"], "amount": "5.00"}, "key-1")
    broker.enqueue(message)
    broker.enqueue(message)
    wait_for_status(store, message.message_id, "succeeded")
    broker.join("payments", fail_fast=False)
    assert len(store.payments()) == 1


def test_two_payments_with_the_same_idempotency_key_charge_once(store, workers):
    user = sign_up(store)["result"]
    first = process_payment.send({"userId": user["id"], "amount": "5.00"}, "same-key")
    second = process_payment.send({"userId": user["id"], "amount": "5.00"}, "same-key")
    wait_for_status(store, first.message_id, "succeeded")
    wait_for_status(store, second.message_id, "succeeded")
    assert len(store.payments()) == 1


def test_a_redelivered_payment_without_a_key_is_recorded_once(store, workers, broker):
    user = sign_up(store)["result"]
    message = process_payment.message({"userId": user["id"], "amount": "5.00"}, None)
    broker.enqueue(message)
    broker.enqueue(message)
    wait_for_status(store, message.message_id, "succeeded")
    broker.join("payments", fail_fast=False)
    assert [p["taskId"] for p in store.payments()] == [message.message_id]


def test_a_key_equal_to_another_tasks_id_is_a_new_payment(store, workers):
    # Given a payment without a key, recorded once for its task
    user = sign_up(store)["result"]
    first = process_payment.send({"userId": user["id"], "amount": "5.00"}, None)
    wait_for_status(store, first.message_id, "succeeded")
    # When another payment's key happens to be that task's id
    second = process_payment.send({"userId": user["id"], "amount": "7.00"}, first.message_id)
    task = wait_for_status(store, second.message_id, "succeeded")
    # Then it is recorded too: keys and tasks are separate namespaces
    assert task["result"]["amount"] == "7.00"
    assert sorted(p["amount"] for p in store.payments()) == ["5.00", "7.00"]


@pytest.mark.parametrize("key", ["", 42, "x" * 256, "tab\there"])
def test_a_payment_with_an_invalid_key_fails_for_good(store, workers, key):
    user = sign_up(store)["result"]
    message = process_payment.send({"userId": user["id"], "amount": "5.00"}, key)
    task = wait_for_status(store, message.message_id, "failed")
    assert "idempotency key" in task["error"]
    assert store.payments() == []


def test_a_payment_for_an_unknown_user_fails_for_good(store, workers, broker):
    message = process_payment.send({"userId": 99, "amount": "1.00"}, None)
    task = wait_for_status(store, message.message_id, "failed")
    assert task["error"] == "unknown user 99"
    broker.join("payments", fail_fast=False)
    assert [m.options.get("retries", 0) for m in broker.dead_letters] == [0]
    assert store.payments() == []


def failed_payment_then_its_user(store, broker):
    """A payment that failed for good (its user did not exist yet), and then that user."""
    message = process_payment.send({"userId": 1, "amount": "4.00"}, None)
    wait_for_status(store, message.message_id, "failed")
    broker.join("payments", fail_fast=False)
    sign_up(store)
    return message


def test_a_redelivery_of_a_payment_that_failed_for_good_is_skipped(store, workers, broker):
    # Given a payment that failed for good, and then its user signing up
    message = failed_payment_then_its_user(store, broker)
    # When its message is delivered again (its worker stopped before committing it)
    broker.enqueue(message)
    broker.join("payments", fail_fast=False)
    # Then the caller's answer stands: failed, and nothing paid
    assert store.get_task(message.message_id)["status"] == "failed"
    assert store.payments() == []


def test_a_replay_of_a_payment_that_failed_for_good_runs_it_again(store, workers, broker):
    message = failed_payment_then_its_user(store, broker)
    broker.enqueue(message.copy(options={REPLAYED_OPTION: 1}))
    assert wait_for_status(store, message.message_id, "succeeded")["result"]["amount"] == "4.00"
    assert len(store.payments()) == 1


def test_a_get_user_timeout_retries_the_payment_until_the_auth_worker_is_up(store, broker):
    # Given a user, and a payments worker but no auth worker
    user = store.create_user(name="Ada", email="ada@example.com", task_id="setup")
    payments = run_workers(broker, "payments")
    try:
        message = process_payment.send({"userId": user["id"], "amount": "3.00"}, None)
        task = wait_for_status(store, message.message_id, "retrying")
        assert "UserLookupTimedOut" in task["error"]
        # When the auth worker comes up
        auth = run_workers(broker, "auth")
        try:
            # Then the payment goes through
            wait_for_status(store, message.message_id, "succeeded", timeout=20)
        finally:
            auth.stop()
    finally:
        payments.stop()
    assert len(store.payments()) == 1


def test_every_payments_thread_waiting_on_get_user_does_not_deadlock(store, broker):
    user = store.create_user(name="Ada", email="ada@example.com", task_id="setup")
    payments = run_workers(broker, "payments", threads=2)
    auth = run_workers(broker, "auth", threads=2)
    try:
        messages = [process_payment.send({"userId": user["id"], "amount": f"{n}.00"}, None) for n in range(1, 9)]
        for message in messages:
            wait_for_status(store, message.message_id, "succeeded", timeout=20)
    finally:
        auth.stop()
        payments.stop()
    assert len(store.payments()) == 8


def test_a_database_that_refuses_statuses_is_logged_once_and_the_tasks_still_run(store, broker, monkeypatch, caplog):
    from sqlalchemy.exc import OperationalError

    from tasks.store import Store

    def down(self, *args, **kwargs):
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    # Given a database that refuses every status write
    monkeypatch.setattr(Store, "set_status", down)
    monkeypatch.setattr(Store, "start_task", down)
    # When users sign up
    for i in range(5):
        create_user.send({"name": f"U{i}", "email": f"u{i}@example.com"})
    worker = run_workers(broker, "auth")
    try:
        broker.join("auth")
    finally:
        worker.stop()
    # Then each is stored, and the refusal is logged once, with its traceback, not once per write
    assert sorted(store.get_user(i)["name"] for i in range(1, 6)) == [f"U{i}" for i in range(5)]
    lines = [r for r in caplog.records if r.name == "broker.status" and r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].getMessage().startswith("Task statuses: could not record status running of task")
    assert lines[0].exc_info is not None


def test_reservations_abandoned_for_a_day_are_forgotten_and_no_other_task(store, broker):
    import datetime as dt

    import sqlalchemy as sa

    from tasks.maintenance import forget_abandoned_keys
    from tasks.store import Task

    # Given reservations left submitting two days and a minute ago, and an old task that ran
    store.add_task(task_id="old", kind="create_user", idempotency_key="k-old", request_fingerprint="f")
    store.add_task(task_id="new", kind="create_user", idempotency_key="k-new", request_fingerprint="f")
    store.set_status("done", "create_user", "succeeded")
    two_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    with store.engine.begin() as connection:
        connection.execute(sa.update(Task).where(Task.id.in_(["old", "done"])).values(updated_at=two_days_ago))
    # When the hourly job runs
    forget_abandoned_keys.send()
    worker = run_workers(broker, "maintenance")
    try:
        broker.join("maintenance")
    finally:
        worker.stop()
    # Then only the reservation abandoned for over a day is gone
    assert store.get_task("old") is None
    assert store.get_task("new")["status"] == "submitting"
    assert store.get_task("done")["status"] == "succeeded"
