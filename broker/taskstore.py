"""Task statuses in a database: the status store kafka-tasks ships, on SQLAlchemy 2 (SQLite or
PostgreSQL).

A task's row is its status (``broker.lifecycle``), its result or error, and, for a request with
an ``Idempotency-Key``, the key and what was asked under it.  Writes are upserts that move a task
only where the lifecycle allows the new status to follow the stored one, so a redelivery never
takes back what a caller was told; they are group-committed (``broker.groupcommit``): the writes of
threads that arrive together share one transaction, and each caller returns once its own is
committed.  The ``secrets`` table holds the key that signs task ids (``broker.taskids``), made
once by whichever process needs it first.

:data:`METADATA` holds both tables: an application that keeps its own tables in the same
database adds them to it (and migrates them all with Alembic, as the reference system does), or
calls :meth:`TaskStore.create_schema` for these two.

Needs SQLAlchemy (``pip install 'kafka-tasks[flask]'``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import itertools
import json
import secrets
import threading
from pathlib import Path

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Index,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    event,
    or_,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from .groupcommit import GroupCommit
from .lifecycle import FINAL, Status, sources
from .taskids import TaskIds

#: How long a writer waits for SQLite's lock held by another process (ms).
SQLITE_BUSY_TIMEOUT_MS = 10_000

#: The tables of task statuses and secrets; an application may add its own.
METADATA = MetaData()

#: The longest task id a row keeps; Dramatiq's are 36-character UUIDs, signed ids 64.
MAX_TASK_ID_LENGTH = 64


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


#: A task's status, looked up by id: never by scanning a topic.
TASKS = Table(
    "tasks",
    METADATA,
    Column("id", String(MAX_TASK_ID_LENGTH), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("idempotency_key", String(255), unique=True, nullable=True),
    #: What was asked under the idempotency key (a hash): the key may not be reused for another request.
    Column("request_fingerprint", String(64), nullable=True),
    Column("result", JSON, nullable=True),
    Column("error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, default=_utcnow),
    Column("updated_at", DateTime(timezone=True), nullable=False, default=_utcnow),
    # The latest tasks of a status (the dashboard's failures) without a scan.
    Index("ix_tasks_status_updated_at", "status", "updated_at"),
)

#: Secrets the processes of a deployment share, made once by whichever needs it first.
SECRETS = Table(
    "secrets",
    METADATA,
    Column("name", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
)

#: The name of the key task ids are signed with.
TASK_IDS_KEY = "task-ids"

_tasks, _secrets = TASKS, SECRETS


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
        #: A worker starts a task: the same write, told apart so that its batch reports which
        #: tasks it did not move (they had ended: a redelivery).
        self.started = row.on_conflict_do_update(
            index_elements=[_tasks.c.id], set_=moved, where=_may_become(Status.RUNNING)
        )


def _may_become(status: Status):
    """The condition on a stored row under which ``status`` may be written over it.  Written as
    ORs, not IN: an IN's "expanding" parameter cannot go into an executemany, which group commit uses.
    """
    return or_(*(_tasks.c.status == old.value for old in sorted(sources(status), key=lambda s: s.value)))


def _status_row(task_id: str, kind: str, status: Status, result, error, created_at) -> dict:
    """The parameters of a worker's status write: the whole row (``created_at`` now by default)."""
    now = _utcnow()
    return {
        "id": task_id,
        "kind": kind,
        "status": status.value,
        "result": result,
        "error": error,
        "created_at": created_at or now,
        "updated_at": now,
    }


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy URL of a database URL: Heroku's ``postgres://`` and ``postgresql://`` mean
    PostgreSQL through psycopg 3; SQLite and ``postgresql+<driver>://`` URLs are kept.

    Raises:
      ValueError: For a URL of another database.
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if not url.startswith(("sqlite:", "postgresql+")):
        raise ValueError("a database URL must be a postgres://, postgresql:// or sqlite:/// URL")
    return url


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


class TaskStore:
    """Task statuses (and the secrets that sign task ids), behind one engine.

    Parameters:
      url(str): A SQLAlchemy URL of SQLite or PostgreSQL.
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

    def _upsert_batch(self, upserts) -> list:
        """Runs ``(statement, parameters)`` pairs in one transaction, in order; a run of the same
        statement as one ``executemany``.

        Returns:
          For each pair in order: for a start (``started``) that did not move its task, the status
          the task kept; else None.
        """
        results = []
        with self._writing() as connection:
            for _, run in itertools.groupby(upserts, key=lambda upsert: id(upsert[0])):
                run = list(run)
                statement, parameters = run[0][0], [parameters for _, parameters in run]
                moved = connection.execute(statement, parameters).rowcount
                if statement is self._writes.started and not (
                    moved == len(parameters) and self.engine.dialect.supports_sane_multi_rowcount
                ):
                    # Some task had ended already: which, the rows themselves now say (a start that
                    # moved its task left it running).
                    ids = [p["id"] for p in parameters]
                    kept = dict(
                        connection.execute(select(_tasks.c.id, _tasks.c.status).where(_tasks.c.id.in_(ids))).all()
                    )
                    results += [
                        None if kept.get(p["id"]) == Status.RUNNING else Status(kept[p["id"]]) for p in parameters
                    ]
                else:
                    results += [None] * len(parameters)
        return results

    def create_schema(self) -> None:
        """Creates the tables of :data:`METADATA` that are missing.  Safe to run again."""
        METADATA.create_all(self.engine)

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
        inserted = connection.execute(
            self._insert(table).values(**values).on_conflict_do_nothing().returning(*table.c)
        ).first()
        if inserted is not None:
            return inserted, True
        # Done before (the usual case is the first time: so the insert comes first, with no read).
        return connection.execute(table.select().where(table.c[key] == values[key])).first(), False

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
        status = Status(status)
        statement = self._writes.finished if status in FINAL else self._writes.progressed
        result = json.loads(json.dumps(result, default=str)) if result is not None else None
        self._upsert((statement, _status_row(task_id, kind, status, result, error, created_at)))

    def start_task(self, task_id: str, kind: str, *, created_at: dt.datetime | None = None) -> Status | None:
        """Moves a task to ``running`` as a worker starts it, creating its row if it has none: one
        write, which also tells a redelivery of a task that had ended, with no read before it.

        Returns:
          None if the task is now running; else the end it keeps (``succeeded``, ``failed`` or
          ``dead``): it ended before, and this is a redelivery.
        """
        return self._upsert((self._writes.started, _status_row(task_id, kind, Status.RUNNING, None, None, created_at)))

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

    def latest(self, statuses, limit: int = 20) -> list[dict]:
        """The tasks last moved to one of ``statuses``, newest first (the dashboard's failures)."""
        query = (
            _tasks.select()
            .where(_tasks.c.status.in_([str(status) for status in statuses]))
            .order_by(_tasks.c.updated_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [_task_dict(row) for row in connection.execute(query)]

    def _insert(self, table):
        """An INSERT that can say ``ON CONFLICT``, in the engine's dialect."""
        try:
            return _INSERTS[self.engine.dialect.name](table)
        except KeyError:
            raise RuntimeError(f"unsupported database {self.engine.dialect.name!r}: use SQLite or PostgreSQL") from None
