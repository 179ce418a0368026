"""The reference system's data: users and payments beside the task statuses, on SQLAlchemy 2,
SQLite by default, PostgreSQL in production (``DATABASE_URL``).

:class:`Store` is the library's :class:`broker.taskstore.TaskStore` (task statuses and the key that
signs task ids) with the reference system's own tables in the same database and the same
:data:`~broker.taskstore.METADATA`, all migrated by Alembic (``tasks/migrations``).

Every write the actors make is idempotent, keyed so that a redelivered message finds its own
earlier work instead of doing it twice: a user remembers the task that created it, and a payment
is unique by its idempotency key.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import BigInteger, DateTime, Integer, Numeric, String, inspect, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from broker.taskstore import METADATA, SECRETS, TASKS, TaskStore

from . import migrations


class Base(DeclarativeBase):
    #: One metadata with the library's tables: Alembic migrates them all.
    metadata = METADATA


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
    """A task's status (the library's ``tasks`` table)."""

    __table__ = TASKS


class Secret(Base):
    """A secret the processes of a deployment share (the library's ``secrets`` table)."""

    __table__ = SECRETS


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


_users, _payments = User.__table__, Payment.__table__


class EmailTaken(Exception):
    """A different sign-up already registered this email."""


class TaskKeyMismatch(Exception):
    """This task already recorded a payment under another idempotency key."""


class Store(TaskStore):
    """The reference system's data, behind one engine: task statuses, users and payments.

    Parameters:
      url(str): A SQLAlchemy URL of SQLite or PostgreSQL (``Config.database_url``).
    """

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
