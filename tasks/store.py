"""Where users, payments and task statuses live: SQLAlchemy 2, SQLite by default, PostgreSQL in
production (``DATABASE_URL``).

Every write the actors make is idempotent, keyed so that a redelivered message finds its own
earlier work instead of doing it twice: a user remembers the task that created it, and a payment
is unique by its idempotency key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import itertools
import json
import secrets
import threading
from decimal import Decimal
from pathlib import Path

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    and_,
    create_engine,
    event,
    inspect,
    or_,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from . import migrations
from .groupcommit import GroupCommit
from .lifecycle import FINAL, Status, sources
from .taskids import TaskIds

#: How long a writer waits for SQLite's lock held by another process (ms).
SQLITE_BUSY_TIMEOUT_MS = 10_000


class Base(DeclarativeBase):
    pass


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    #: The task that created the user: its redelivery returns this user instead of failing.
    created_by: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: The caller's key: a payment is recorded once per key.  None when the caller gave none.
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(String(3))
    #: The task that recorded it: a payment without a key is recorded once per task.  Its own
    #: column, not a key made up from the task id, so no caller's key can ever name another task.
    task_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)


class Task(Base):
    """A task's status, looked up by id: never by scanning a topic."""

    __tablename__ = "tasks"
    #: The latest tasks of a status (the dashboard's failures) without a scan.
    __table_args__ = (Index("ix_tasks_status_updated_at", "status", "updated_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    #: What was asked under the idempotency key (a hash): the key may not be reused for another request.
    request_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    result: Mapped[object | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)


class Secret(Base):
    """A secret the processes of a deployment share, made once by whichever needs it first."""

    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


#: The name of the key the gateway signs task ids with.
TASK_IDS_KEY = "task-ids"


def _user_dict(user) -> dict:
    """A user as the API shows it."""
    return {"id": user.id, "name": user.name, "email": user.email}


def _payment_dict(payment) -> dict:
    """A payment as the API shows it."""
    return {
        "id": payment.id,
        "userId": payment.user_id,
        "amount": f"{payment.amount:.2f}",
        "currency": payment.currency,
        "idempotencyKey": payment.idempotency_key,
        "taskId": payment.task_id,
    }


def _task_dict(task) -> dict:
    """A task as the API shows it."""
    return {
        "taskId": task.id,
        "kind": task.kind,
        "status": task.status,
        "result": task.result,
        "error": task.error,
        "createdAt": _in_utc(task.created_at),
        "updatedAt": _in_utc(task.updated_at),
        "requestFingerprint": task.request_fingerprint,
    }


def _in_utc(moment: dt.datetime) -> dt.datetime:
    """A stored time, marked UTC: SQLite gives back the UTC times it was given without their zone."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


_users, _payments, _tasks, _secrets = User.__table__, Payment.__table__, Task.__table__, Secret.__table__

#: INSERT constructs that support ``ON CONFLICT``, by dialect name.
_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


class _TaskWrites:
    """The task table's frequent upserts, built once per store: building a statement costs more
    than running it.  Each takes the whole row as parameters, and writes over a row only where the
    lifecycle allows the new status to follow the stored one (:data:`tasks.lifecycle.ALLOWED`).
    """

    def __init__(self, insert) -> None:
        row = insert(_tasks)
        #: Submitted: new, or ``submitting`` becomes ``queued``.
        self.queued = row.on_conflict_do_update(
            index_elements=[_tasks.c.id],
            set_={"status": row.excluded.status, "updated_at": row.excluded.updated_at},
            where=_may_become(Status.QUEUED),
        )
        #: Not confirmed: new, or ``submitting`` becomes ``unknown``.
        self.unknown = row.on_conflict_do_update(
            index_elements=[_tasks.c.id],
            set_={"status": row.excluded.status, "updated_at": row.excluded.updated_at},
            where=_may_become(Status.UNKNOWN),
        )
        moved = {name: row.excluded[name] for name in ("status", "result", "error", "updated_at")}
        #: Every end (succeeded, failed, dead) may follow the same statuses.
        self.finished = row.on_conflict_do_update(
            index_elements=[_tasks.c.id], set_=moved, where=_may_become(Status.SUCCEEDED)
        )
        #: Both statuses on the way (running, retrying) may follow the same statuses.
        self.progressed = row.on_conflict_do_update(
            index_elements=[_tasks.c.id], set_=moved, where=_may_become(Status.RUNNING)
        )


def _may_become(status: Status):
    """The condition on a stored row under which ``status`` may be written over it.  Written as
    ORs, not IN: an IN's "expanding" parameter cannot go into an executemany, which group commit uses.
    """
    return or_(*(_tasks.c.status == old.value for old in sorted(sources(status), key=lambda s: s.value)))


class EmailTaken(Exception):
    """A different sign-up already registered this email."""


class TaskKeyMismatch(Exception):
    """This task already recorded a payment under another idempotency key."""


def make_engine(url: str) -> Engine:
    """Creates an engine; SQLite gets WAL mode and a busy timeout, safe for several processes."""
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    """The application's data, behind one engine.

    Parameters:
      url(str): A SQLAlchemy URL of SQLite or PostgreSQL (``Config.database_url``).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(self.url)
        #: SQLite takes one writer at a time.  This process's threads queue for it on a lock, in
        #: turn, instead of in SQLite's busy handler, which sleeps between attempts and so makes the
        #: slowest writes much slower (docs/benchmarks.md).  Other processes still meet the busy handler.
        self._write_lock = threading.Lock() if self.engine.dialect.name == "sqlite" else contextlib.nullcontext()

        #: Status upserts, the one write of every sign-up and of every step a worker takes.
        self._upsert = GroupCommit(self._upsert_batch)

    @contextlib.contextmanager
    def _writing(self):
        """A write transaction, taken in turn with this process's other writers on SQLite."""
        with self._write_lock, self.engine.begin() as connection:
            yield connection

    def _upsert_batch(self, upserts) -> None:
        """Runs ``(statement, parameters)`` pairs in one transaction, in order; a run of the same
        statement as one ``executemany``.
        """
        with self._writing() as connection:
            for _, run in itertools.groupby(upserts, key=lambda upsert: id(upsert[0])):
                run = list(run)
                connection.execute(run[0][0], [parameters for _, parameters in run])

    def create_schema(self) -> None:
        """Brings the schema up to the code's: :meth:`migrate`.  Safe to run again (``release`` does)."""
        self.migrate()

    def migrate(self) -> list[str]:
        """Runs the migrations the database lacks (``tasks/migrations``), in one transaction.

        A database that ``release`` made before migrations existed has the first revision's tables
        and no ``alembic_version``: it is stamped with that revision first, and upgraded from there.

        Returns:
          The revisions applied.
        """
        from alembic import command  # only release migrates; importing it logs its plugins

        before = self.schema_revision()
        with self._writing() as connection:
            config = migrations.config(connection)
            stamped = before is None and inspect(connection).has_table("users")
            if stamped:
                command.stamp(config, migrations.FIRST)
                before = migrations.FIRST
            command.upgrade(config, "head")
        return migrations.between(before, migrations.head())

    def schema_revision(self) -> str | None:
        """The database's schema revision, or ``None`` before any migration."""
        with self.engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def schema_is_current(self) -> bool:
        """Tells whether the database's schema is the code's (no migration is pending)."""
        return self.schema_revision() == migrations.head()

    def ping(self) -> None:
        """Raises if the database cannot be reached."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def secret(self, name: str) -> str:
        """Returns the secret called ``name``, made (random, 256 bits) if no process made it yet."""
        with self._writing() as connection:
            row, _ = self._insert_once(connection, _secrets, "name", {"name": name, "value": secrets.token_urlsafe(32)})
        return row.value

    @functools.cached_property
    def task_ids(self) -> TaskIds:
        """The gateway's task ids, signed with the deployment's key (read once per process)."""
        return TaskIds(self.secret(TASK_IDS_KEY))

    # Users --------------------------------------------------------------------------------------

    def create_user(self, *, name: str, email: str, task_id: str) -> dict:
        """Stores a user, once per task.

        Returns:
          The user, also when this task created it before (a redelivery).

        Raises:
          EmailTaken: If another task already registered the email.
        """
        with self._writing() as connection:
            user, _ = self._insert_once(
                connection,
                _users,
                "created_by",
                {"name": name, "email": email, "created_by": task_id, "created_at": _utcnow()},
            )
        if user is None:
            raise EmailTaken(email)
        return _user_dict(user)

    def get_user(self, user_id: int) -> dict | None:
        with self.engine.connect() as connection:
            user = connection.execute(_users.select().where(_users.c.id == user_id)).first()
            return None if user is None else _user_dict(user)

    # Payments -----------------------------------------------------------------------------------

    def record_payment(
        self, *, idempotency_key: str | None, user_id: int, amount: Decimal, currency: str, task_id: str
    ) -> tuple[dict, bool]:
        """Records a payment exactly once per idempotency key, or, without one, once per task.

        The two never meet: a key that happens to equal some task's id is a new key.

        Returns:
          The payment, and whether this call recorded it (False: it was recorded before).

        Raises:
          TaskKeyMismatch: If this task recorded a payment under another key (or none) before.
        """
        with self._writing() as connection:
            payment, created = self._insert_once(
                connection,
                _payments,
                "task_id" if idempotency_key is None else "idempotency_key",
                {
                    "idempotency_key": idempotency_key,
                    "user_id": user_id,
                    "amount": amount,
                    "currency": currency,
                    "task_id": task_id,
                    "created_at": _utcnow(),
                },
            )
        if payment is None or payment.idempotency_key != idempotency_key:
            raise TaskKeyMismatch(task_id)
        return _payment_dict(payment), created

    def payments(self) -> list[dict]:
        with self.engine.connect() as connection:
            return [_payment_dict(p) for p in connection.execute(_payments.select().order_by(_payments.c.id))]

    # Task statuses ------------------------------------------------------------------------------

    def add_task(
        self, *, task_id: str, kind: str, idempotency_key: str | None = None, request_fingerprint: str | None = None
    ) -> dict:
        """Records a new task as ``submitting``: about to be sent.  Only a task with an idempotency
        key needs this, so that a repeated key finds it while it is being sent.

        Returns:
          The task; when ``idempotency_key`` was used before, the earlier task instead.
        """
        now = _utcnow()
        with self._writing() as connection:
            task, _ = self._insert_once(
                connection,
                _tasks,
                "id" if idempotency_key is None else "idempotency_key",
                {
                    "id": task_id,
                    "kind": kind,
                    "status": Status.SUBMITTING.value,
                    "idempotency_key": idempotency_key,
                    "request_fingerprint": request_fingerprint,
                    "created_at": now,
                    "updated_at": now,
                },
            )
        return _task_dict(task)

    def take_over(self, task_id: str, *, abandoned_before: dt.datetime) -> bool:
        """Claims a task to send it again: one left ``submitting`` since before ``abandoned_before``
        (its sender died), or one whose send Kafka did not confirm (``unknown``).  The claim counts as
        an update, so of callers that try at once, exactly one gets it.  Returns whether this one did.
        """
        with self._writing() as connection:
            claimed = connection.execute(
                _tasks.update()
                .where(
                    _tasks.c.id == task_id,
                    or_(
                        and_(_tasks.c.status == Status.SUBMITTING.value, _tasks.c.updated_at < abandoned_before),
                        _tasks.c.status == Status.UNKNOWN.value,
                    ),
                )
                .values(status=Status.SUBMITTING.value, updated_at=_utcnow())
            )
        return claimed.rowcount == 1

    def mark_unknown(self, task_id: str, kind: str) -> None:
        """Records that Kafka did not confirm a task, which it may have stored all the same; its
        worker's status wins over this one."""
        now = _utcnow()
        self._upsert(
            (
                self._writes.unknown,
                {"id": task_id, "kind": kind, "status": Status.UNKNOWN.value, "created_at": now, "updated_at": now},
            )
        )

    def _insert_once(self, connection, table, key: str, values: dict):
        """Inserts a row unless one with the same value in the unique column ``key`` exists: how a
        redelivered or repeated request finds its earlier work instead of doing it twice.

        Returns:
          The row with that key (None if the insert met a conflict on another unique column), and
          whether this call inserted it.
        """
        find = table.select().where(table.c[key] == values[key])
        row = connection.execute(find).first()
        if row is not None:
            return row, False
        inserted = connection.execute(
            self._insert(table).values(**values).on_conflict_do_nothing().returning(*table.c)
        ).first()
        if inserted is not None:
            return inserted, True
        return connection.execute(find).first(), False  # a concurrent writer of the same key won

    def mark_queued(self, task_id: str, kind: str) -> None:
        """Records that Kafka holds a task: one write.

        A task recorded as ``submitting`` becomes ``queued``; a task not recorded yet is recorded as
        ``queued``; a task a worker already moved on keeps its status.
        """
        now = _utcnow()
        self._upsert(
            (
                self._writes.queued,
                {"id": task_id, "kind": kind, "status": Status.QUEUED.value, "created_at": now, "updated_at": now},
            )
        )

    def forget_abandoned(self, *, before: dt.datetime) -> int:
        """Forgets the reservations of ``Idempotency-Key`` requests whose send never completed
        (``submitting`` since before ``before``): nothing reached Kafka, so nothing will run them.

        Returns:
          How many it forgot.
        """
        with self._writing() as connection:
            forgotten = connection.execute(
                _tasks.delete().where(_tasks.c.status == Status.SUBMITTING.value, _tasks.c.updated_at < before)
            )
        return forgotten.rowcount

    def forget_task(self, task_id: str) -> None:
        """Removes a task that never reached Kafka."""
        with self._writing() as connection:
            connection.execute(
                _tasks.delete().where(_tasks.c.id == task_id, _tasks.c.status == Status.SUBMITTING.value)
            )

    def set_status(
        self,
        task_id: str,
        kind: str,
        status: Status | str,
        *,
        result=None,
        error: str | None = None,
        created_at: dt.datetime | None = None,
    ) -> None:
        """Moves a task to a status, creating its row if it has none yet: one write.

        A finished task (``succeeded``, ``failed``, ``dead``) never goes back to running: a
        redelivery of a finished task does not change what the caller was told.

        Parameters:
          created_at(datetime): When the task was made, kept if this write creates its row (now
            by default).
        """
        now = _utcnow()
        status = Status(status)
        statement = self._writes.finished if status in FINAL else self._writes.progressed
        result = json.loads(json.dumps(result, default=str)) if result is not None else None
        self._upsert(
            (
                statement,
                {
                    "id": task_id,
                    "kind": kind,
                    "status": status.value,
                    "result": result,
                    "error": error,
                    "created_at": created_at or now,
                    "updated_at": now,
                },
            )
        )

    @functools.cached_property
    def _writes(self) -> _TaskWrites:
        return _TaskWrites(self._insert)

    def get_task(self, task_id: str) -> dict | None:
        """Returns a task's status, or None for an id no task has (also one no column could hold)."""
        if "\x00" in task_id or len(task_id) > _tasks.c.id.type.length:
            return None  # PostgreSQL would refuse to even compare it: an error, not "no such task"
        with self.engine.connect() as connection:
            row = connection.execute(_tasks.select().where(_tasks.c.id == task_id)).first()
            return None if row is None else _task_dict(row)

    def _insert(self, table):
        """An INSERT that can say ``ON CONFLICT``, in the engine's dialect."""
        try:
            return _INSERTS[self.engine.dialect.name](table)
        except KeyError:
            raise RuntimeError(f"unsupported database {self.engine.dialect.name!r}: use SQLite or PostgreSQL") from None
