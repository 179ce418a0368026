"""Task statuses, kept in the database so any process can answer ``GET /api/tasks/<id>``.

A task the gateway sent is ``queued`` until its first status here (its id tells so, see
:mod:`tasks.taskids`); this middleware records it as ``running``, ``retrying``, ``succeeded``,
``failed`` (a :class:`~tasks.errors.PermanentFailure`) and ``dead`` (retries exhausted), for
actors declared with ``track_status=True``.  The row it creates keeps the time the task was made
(the message's timestamp), as the id does.

``failed`` and ``dead`` are answers a caller may act on (a client told "unknown user" may pay
again under a new key).  So a redelivery of such a task (its worker stopped before committing its
offset) is skipped, not run again to perhaps answer otherwise; only a dead-letter replay, which
an operator asks for, runs it again.  (Dramatiq's Results middleware stores None for a skipped
message of an actor that stores results; no tracked actor here does.)
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Protocol

import dramatiq
from dramatiq.middleware import SkipMessage

from .clientlog import ConditionLog
from .dlq import REPLAYED_OPTION
from .lifecycle import SETTLED_FAILURES, Status
from .taskids import from_millis

logger = logging.getLogger(__name__)


class PermanentFailure(Exception):
    """A task that must not be retried: its failure is the answer, not an accident.  Actors list it
    (or a subclass) in ``throws``, so Retries lets it fail at once; its status is ``failed``, and its
    message is the reason a caller sees."""


class StatusStore(Protocol):
    """Where :class:`TaskStatus` keeps statuses: a small interface."""

    def set_status(
        self, task_id: str, kind: str, status: Status, *, result=None, error: str | None = None, created_at=None
    ) -> None:
        """Moves a task to a status where the lifecycle allows it (``broker.lifecycle.ALLOWED``)."""

    def start_task(self, task_id: str, kind: str, *, created_at=None) -> Status | None:
        """Moves a task to ``running``; returns the end it keeps instead if it had ended, else None."""


#: The names of the actors whose status is tracked, over every broker of the process.
_TRACKED: set[str] = set()


def describe(exception: BaseException | None) -> str | None:
    """Returns the reason a caller sees: the message of a permanent failure, else type and message."""
    if exception is None:
        return None
    if isinstance(exception, PermanentFailure):
        return str(exception)
    return f"{type(exception).__name__}: {exception}"


def _made_at(message) -> dt.datetime | None:
    """When the message was made; None for a timestamp no date can hold (a record produced by hand)."""
    try:
        return from_millis(message.message_timestamp)
    except (OverflowError, TypeError, ValueError):
        return None


class KeptResults(logging.Filter):
    """Drops Dramatiq's warning that a result was discarded, for the actors whose results this
    middleware keeps in the database: without it, every finished task logged that it lost its
    result, which it did not."""

    def __init__(self, tracked) -> None:
        super().__init__()
        self.tracked = tracked

    def filter(self, record: logging.LogRecord) -> bool:
        discarded = DISCARDED.match(record.getMessage())
        return not (discarded and self.tracked(discarded.group(1)))


#: The logger of Dramatiq's Results middleware, and its warning that a result was discarded.
RESULTS_LOGGER = "dramatiq.results.middleware.Results"
DISCARDED = re.compile(r"Actor '(.+)' returned a value that is not None, .* the value has been discarded")


class TaskStatus(dramatiq.Middleware):
    """Records the status of tracked actors' messages in the store.

    Parameters:
      store(StatusStore): Where statuses are kept.
    """

    def __init__(self, store: StatusStore) -> None:
        self.store = store
        #: A database that fails for a while is logged when it starts, and once a minute, not per task.
        self._log = ConditionLog("Task statuses", logger=logger)
        results_logger = logging.getLogger(RESULTS_LOGGER)
        if not any(isinstance(f, KeptResults) for f in results_logger.filters):
            results_logger.addFilter(KeptResults(_TRACKED.__contains__))

    def after_declare_actor(self, broker, actor):
        if actor.options.get("track_status"):
            _TRACKED.add(actor.actor_name)

    @property
    def actor_options(self):
        return {"track_status"}

    def _tracked(self, broker, message) -> bool:
        try:
            return bool(broker.get_actor(message.actor_name).options.get("track_status"))
        except dramatiq.errors.ActorNotFound:
            return False

    def _set(self, broker, message, status: Status, **fields) -> None:
        if not self._tracked(broker, message):
            return
        try:
            self.store.set_status(
                message.message_id, message.actor_name, status, created_at=_made_at(message), **fields
            )
        except Exception as e:
            # A status is a courtesy to the caller; it must never fail the task itself.
            self._log.report(
                logging.ERROR,
                f"write {type(e).__name__}",
                f"could not record status {status!s} of task {message.message_id}: {type(e).__name__}: {e}",
                exc_info=e,
            )
        else:
            self._log.ok()

    def before_process_message(self, broker, message):
        if not self._tracked(broker, message):
            return
        try:
            kept = self.store.start_task(message.message_id, message.actor_name, created_at=_made_at(message))
        except Exception as e:
            # A status is a courtesy to the caller; without it the task runs all the same.
            self._log.report(
                logging.ERROR,
                f"write {type(e).__name__}",
                f"could not record status running of task {message.message_id}: {type(e).__name__}: {e}",
                exc_info=e,
            )
            return
        self._log.ok()
        if kept in SETTLED_FAILURES and REPLAYED_OPTION not in message.options:
            logger.info("Task %s already %s; its redelivery is skipped.", message.message_id, kept)
            raise SkipMessage(f"task {message.message_id} already {kept}")

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if exception is None:
            self._set(broker, message, Status.SUCCEEDED, result=result)
        elif not message.failed:
            self._set(broker, message, Status.RETRYING, error=describe(exception))

    def after_nack(self, broker, message):
        exception = getattr(message, "_exception", None)
        status = Status.FAILED if isinstance(exception, PermanentFailure) else Status.DEAD
        self._set(broker, message, status, error=describe(exception) or "rejected")
