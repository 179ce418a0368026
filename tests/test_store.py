"""The store on SQLite and on PostgreSQL: idempotent writes and task statuses."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from sqlalchemy import text, update

from broker.lifecycle import Status
from tasks.store import EmailTaken, Store, Task, TaskKeyMismatch


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        store = Store(request.getfixturevalue("postgres_server"))
        with store.engine.begin() as connection:
            for table in ("users", "payments", "tasks", "secrets", "alembic_version"):
                connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
    store.create_schema()
    yield store
    store.engine.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'wal.db'}")
    with store.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_create_schema_twice_is_harmless(store):
    store.create_schema()
    store.ping()


# Migrations -------------------------------------------------------------------------------------


def test_migrating_twice_applies_nothing_the_second_time(store):
    assert store.migrate() == []
    assert store.schema_is_current()


def test_the_models_are_what_the_migrations_make(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tasks.store import Base

    with store.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_a_database_made_before_migrations_is_upgraded_with_every_row(store):
    from pathlib import Path

    from tasks import migrations

    # Given a database with the schema `release` made before migrations existed, and rows in it
    with store.engine.begin() as connection:
        for table in ("users", "payments", "tasks", "secrets", "alembic_version"):
            connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
        schema = Path(__file__).parent / "data" / f"schema-before-migrations.{store.engine.dialect.name}.sql"
        for statement in schema.read_text().split(";"):
            lines = [line for line in statement.splitlines() if not line.startswith("--")]
            if "".join(lines).strip():
                connection.execute(text("\n".join(lines)))
    user = store.create_user(name="Ada", email="ada@example.com", task_id="t-user")
    payment, _ = store.record_payment(
        idempotency_key="k-1", user_id=user["id"], amount=Decimal("4.20"), currency="EUR", task_id="t-pay"
    )
    store.set_status("t-pay", "process_payment", "succeeded", result={"ok": True})
    secret = store.secret("task-ids")
    assert store.schema_revision() is None
    # When it is migrated, then it has the code's schema, and every row
    assert store.migrate() == migrations.between(migrations.FIRST, migrations.head())
    assert store.schema_is_current()
    assert store.get_user(user["id"]) == user
    assert store.payments() == [payment]
    assert store.get_task("t-pay")["result"] == {"ok": True}
    assert store.secret("task-ids") == secret
    with store.engine.connect() as connection:
        from sqlalchemy import inspect

        assert "ix_tasks_status_updated_at" in {index["name"] for index in inspect(connection).get_indexes("tasks")}


def test_a_redelivered_sign_up_returns_the_same_user(store):
    first = store.create_user(name="Ada", email="ada@example.com", task_id="t1")
    again = store.create_user(name="Ada", email="ada@example.com", task_id="t1")
    assert again == first
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM users")).scalar() == 1


def test_a_secret_is_made_once_and_shared_by_every_store_of_the_database(store):
    first = store.secret("task-ids")
    other = Store(store.url)
    try:
        assert other.secret("task-ids") == first
    finally:
        other.engine.dispose()
    assert len(first) >= 40  # 256 random bits, URL-safe base64
    assert store.secret("another") != first


def test_stores_of_one_database_recognise_each_others_task_ids(store):
    other = Store(store.url)
    try:
        task_id = store.task_ids.new("create_user")
        assert other.task_ids.issued(task_id, ["create_user"]).kind == "create_user"
    finally:
        other.engine.dispose()


def test_set_status_keeps_the_time_a_task_was_made(store):
    made = dt.datetime.now(dt.UTC).replace(microsecond=123_000) - dt.timedelta(hours=1)
    store.set_status("a", "create_user", "running", created_at=made)
    store.set_status("a", "create_user", "succeeded", created_at=made + dt.timedelta(seconds=5))

    task = store.get_task("a")
    assert task["createdAt"] == made
    assert task["updatedAt"] > made


def test_another_sign_up_with_the_same_email_is_refused(store):
    store.create_user(name="Ada", email="ada@example.com", task_id="t1")
    with pytest.raises(EmailTaken):
        store.create_user(name="Eve", email="ada@example.com", task_id="t2")


def test_a_payment_is_recorded_once_per_idempotency_key(store):
    first, recorded = store.record_payment(
        idempotency_key="k", user_id=1, amount=Decimal("10.10"), currency="EUR", task_id="t1"
    )
    again, recorded_again = store.record_payment(
        idempotency_key="k", user_id=1, amount=Decimal("10.10"), currency="EUR", task_id="t2"
    )
    assert (recorded, recorded_again) == (True, False)
    assert again == first
    assert store.payments() == [first]


def test_a_payment_without_a_key_is_recorded_once_per_task(store):
    first, recorded = store.record_payment(
        idempotency_key=None, user_id=1, amount=Decimal("1"), currency="EUR", task_id="t1"
    )
    again, recorded_again = store.record_payment(
        idempotency_key=None, user_id=1, amount=Decimal("1"), currency="EUR", task_id="t1"
    )
    assert (recorded, recorded_again) == (True, False)
    assert again == first


def test_a_key_equal_to_a_task_id_does_not_find_that_tasks_payment(store):
    by_task, _ = store.record_payment(
        idempotency_key=None, user_id=1, amount=Decimal("1"), currency="EUR", task_id="t1"
    )
    by_key, recorded = store.record_payment(
        idempotency_key="t1", user_id=1, amount=Decimal("2"), currency="EUR", task_id="t2"
    )
    assert recorded
    assert by_key["id"] != by_task["id"]


def test_a_task_that_paid_under_one_key_cannot_pay_under_another(store):
    store.record_payment(idempotency_key="k1", user_id=1, amount=Decimal("1"), currency="EUR", task_id="t1")
    with pytest.raises(TaskKeyMismatch):
        store.record_payment(idempotency_key=None, user_id=1, amount=Decimal("1"), currency="EUR", task_id="t1")
    with pytest.raises(TaskKeyMismatch):
        store.record_payment(idempotency_key="k2", user_id=1, amount=Decimal("1"), currency="EUR", task_id="t1")
    assert len(store.payments()) == 1


def at_once(call, times: int = 8) -> list:
    """Runs ``call`` from several threads at once; returns what each returned."""
    outcomes = []
    threads = [threading.Thread(target=lambda: outcomes.append(call())) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_concurrent_redeliveries_of_a_payment_record_it_once(store):
    outcomes = at_once(
        lambda: store.record_payment(
            idempotency_key="same", user_id=1, amount=Decimal("5"), currency="USD", task_id="t"
        )[1]
    )
    assert sorted(outcomes) == [False] * 7 + [True]
    assert len(store.payments()) == 1


def test_concurrent_redeliveries_of_a_sign_up_return_one_user(store):
    users = at_once(lambda: store.create_user(name="Ada", email="ada@example.com", task_id="t"))
    assert len({user["id"] for user in users}) == 1
    assert store.get_user(users[0]["id"] + 1) is None


def test_concurrent_requests_with_one_idempotency_key_share_a_task(store):
    tasks = iter(range(100))
    task_ids = at_once(
        lambda: store.add_task(task_id=f"t-{next(tasks)}", kind="process_payment", idempotency_key="order-1")["taskId"]
    )
    assert len(set(task_ids)) == 1


def test_money_keeps_its_cents_exactly(store):
    payment, _ = store.record_payment(
        idempotency_key="c", user_id=1, amount=Decimal("0.10"), currency="USD", task_id="t"
    )
    assert payment["amount"] == "0.10"


def test_a_repeated_idempotency_key_returns_the_earlier_task(store):
    first = store.add_task(task_id="a", kind="process_payment", idempotency_key="key-1")
    second = store.add_task(task_id="b", kind="process_payment", idempotency_key="key-1")
    assert second["taskId"] == first["taskId"] == "a"


def test_a_finished_task_does_not_go_back_to_running(store):
    store.add_task(task_id="a", kind="create_user")
    store.set_status("a", "create_user", "succeeded", result={"id": 1})
    store.set_status("a", "create_user", "running")
    task = store.get_task("a")
    assert (task["status"], task["result"]) == ("succeeded", {"id": 1})


def test_only_one_caller_takes_over_an_abandoned_submission(store):
    # Given a task left "submitting" two minutes ago
    store.add_task(task_id="a", kind="process_payment", idempotency_key="key-1")
    now = dt.datetime.now(dt.UTC)
    with store.engine.begin() as connection:
        connection.execute(update(Task).where(Task.id == "a").values(updated_at=now - dt.timedelta(minutes=2)))
    # When two callers that find it abandoned for a minute try to take it over, only one gets it
    assert store.take_over("a", abandoned_before=now - dt.timedelta(minutes=1))
    assert not store.take_over("a", abandoned_before=now - dt.timedelta(minutes=1))


def test_a_submission_in_progress_is_not_taken_over(store):
    store.add_task(task_id="a", kind="process_payment", idempotency_key="key-1")
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)
    assert not store.take_over("a", abandoned_before=earlier)


def test_a_succeeded_task_stays_succeeded_when_a_redelivery_of_it_dies(store):
    store.set_status("a", "process_payment", "succeeded", result={"paymentId": 1})
    store.set_status("a", "process_payment", "dead", error="ResultTimeout: no answer")
    task = store.get_task("a")
    assert (task["status"], task["result"], task["error"]) == ("succeeded", {"paymentId": 1}, None)


def test_a_dead_task_replayed_from_its_dead_letters_can_succeed(store):
    store.set_status("a", "process_payment", "dead", error="ResultTimeout: no answer")
    store.set_status("a", "process_payment", "succeeded", result={"paymentId": 1})
    assert store.get_task("a")["status"] == "succeeded"


def test_mark_queued_does_not_undo_a_workers_progress(store):
    store.add_task(task_id="a", kind="create_user")
    store.set_status("a", "create_user", "running")
    store.mark_queued("a", "create_user")
    assert store.get_task("a")["status"] == "running"


def test_mark_queued_records_a_task_it_has_not_seen(store):
    store.mark_queued("a", "create_user")
    task = store.get_task("a")
    assert (task["kind"], task["status"]) == ("create_user", "queued")


def test_mark_queued_moves_a_submitting_task_to_queued(store):
    store.add_task(task_id="a", kind="process_payment", idempotency_key="key-1")
    store.mark_queued("a", "process_payment")
    assert store.get_task("a")["status"] == "queued"


def test_status_writes_from_many_threads_are_each_recorded(store):
    # Status writes of concurrent threads are committed in shared batches (group commit)
    def write(i: int) -> None:
        store.mark_queued(f"t{i}", "create_user")
        if i % 2:
            store.set_status(f"t{i}", "create_user", "succeeded", result={"id": i})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    tasks = {i: store.get_task(f"t{i}") for i in range(40)}
    assert {i: t["status"] for i, t in tasks.items()} == {i: "succeeded" if i % 2 else "queued" for i in range(40)}
    assert all(tasks[i]["result"] == {"id": i} for i in range(1, 40, 2))


def test_progress_writes_of_several_tasks_commit_in_one_batch(store):
    # Group commit hands the store's batch function every write queued behind the first
    progressed = store._writes.progressed
    batch = [
        (
            progressed,
            {
                "id": f"t{n}",
                "kind": "create_user",
                "status": "running",
                "result": None,
                "error": None,
                "created_at": dt.datetime.now(dt.UTC),
                "updated_at": dt.datetime.now(dt.UTC),
            },
        )
        for n in range(3)
    ]
    store._upsert_batch(batch)
    assert [store.get_task(f"t{n}")["status"] for n in range(3)] == ["running"] * 3


def test_starting_a_task_records_it_as_running(store):
    assert store.start_task("a", "create_user") is None
    assert store.get_task("a")["status"] == "running"


def test_starting_a_task_that_ended_keeps_its_end_and_says_which(store):
    store.set_status("won", "create_user", "succeeded")
    store.set_status("gone", "create_user", "dead", error="retries exhausted")

    assert store.start_task("won", "create_user") == Status.SUCCEEDED
    assert store.start_task("gone", "create_user") == Status.DEAD
    assert store.get_task("gone")["status"] == "dead"


def test_a_batch_of_starts_tells_each_task_that_had_ended(store):
    # A redelivery among first deliveries in one executemany: the rowcount alone cannot say which
    store.set_status("t1", "create_user", "failed", error="unknown user")
    store.set_status("t2", "create_user", "retrying", error="boom")
    now = dt.datetime.now(dt.UTC)
    batch = [
        (
            store._writes.started,
            {
                "id": f"t{n}",
                "kind": "create_user",
                "status": "running",
                "result": None,
                "error": None,
                "created_at": now,
                "updated_at": now,
            },
        )
        for n in range(4)
    ]

    assert store._upsert_batch(batch) == [None, Status.FAILED, None, None]
    assert [store.get_task(f"t{n}")["status"] for n in range(4)] == ["running", "failed", "running", "running"]


@pytest.mark.parametrize("task_id", ["a\x00b", "x" * 65])
def test_an_id_no_task_can_have_finds_no_task(store, task_id):
    assert store.get_task(task_id) is None


def test_task_times_come_back_in_utc(store):
    store.mark_queued("t1", "create_user")
    task = store.get_task("t1")
    assert task["createdAt"].utcoffset() == dt.timedelta(0)
    assert abs(task["createdAt"] - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)


def test_a_status_creates_the_row_of_a_task_sent_from_elsewhere(store):
    store.set_status("a", "create_user", "succeeded", result={"id": 7})
    task = store.get_task("a")
    assert (task["status"], task["result"]) == ("succeeded", {"id": 7})


def test_forget_task_leaves_a_task_kafka_took(store):
    store.add_task(task_id="a", kind="process_payment", idempotency_key="key-1")
    store.mark_queued("a", "process_payment")
    store.forget_task("a")
    assert store.get_task("a")["status"] == "queued"
