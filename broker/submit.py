"""Submitting tasks: sent, and acknowledged by Kafka before anyone is told so.

A web request calls :func:`submit`.  A task's id is signed (:mod:`broker.taskids`), so a task Kafka
acknowledged is known as ``queued`` from its id alone, with no write, until its worker records
its progress.  A task with an ``Idempotency-Key`` is recorded as ``submitting`` before it is sent,
so that a repeated key finds it, and as ``queued`` once Kafka has it; if Kafka certainly did not
store it, that record is removed, and the caller answers 503: nothing was promised.  If Kafka did
not confirm it but may have stored it (a broker that stalls), the task is recorded as ``unknown``
(:class:`OutcomeUnknown`): its worker settles that, and a request sent again with its key sends it
again as the same task, which cannot run twice.  Once Kafka has the task, nothing fails the
submission: not recording it as ``queued`` either.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import dramatiq

from .lifecycle import Status
from .producer import DeliveryFailed

if TYPE_CHECKING:  # SQLAlchemy only where a store is made
    from .taskstore import TaskStore

logger = logging.getLogger(__name__)

#: How long a submission may stay ``submitting`` before a request with its key takes it over.
#: Longer than any send can take (the delivery timeout, and gunicorn kills a request after 30 s):
#: older, the process that was sending it died.
ABANDONED_AFTER = timedelta(seconds=60)


class SubmissionInProgress(Exception):
    """A request with the same idempotency key is still being sent to Kafka."""


class KeyReused(Exception):
    """The idempotency key was used before for a different request."""


class OutcomeUnknown(Exception):
    """Kafka did not confirm the task in time and may have stored it all the same (a broker that
    stalls): the answer must say so, with the task's id, and not invite a resend that doubles it.

    Parameters:
      task_id(str): The task's id, if Kafka has it.
      keyed(bool): Whether the request carried an ``Idempotency-Key``: sent again with it, the
        request sends the same task again, which cannot run twice.
    """

    def __init__(self, task_id: str, *, keyed: bool) -> None:
        super().__init__(f"Kafka did not confirm task {task_id}; it may have stored it")
        self.task_id = task_id
        self.keyed = keyed


def fingerprint(actor: dramatiq.Actor, args: tuple) -> str:
    """Returns what identifies a request under an idempotency key: its actor and arguments, hashed."""
    canonical = json.dumps([actor.actor_name, list(args)], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Submission:
    task_id: str
    #: False when an earlier request with the same idempotency key created the task.
    created: bool


def submit(actor: dramatiq.Actor, *args, store: TaskStore, idempotency_key: str | None = None) -> Submission:
    """Sends ``actor(*args)`` as a task with a signed id, once Kafka can take it.

    Parameters:
      actor(Actor): The actor, as declared on the broker to send through.
      store(TaskStore): Where the task's key is recorded, and whose key signs its id.

    Raises:
      KeyReused: If this key was used before for a request with other arguments.
      SubmissionInProgress: If an earlier request with this key has not finished sending.
      OutcomeUnknown: If Kafka did not confirm the task and may have stored it; it is recorded as
        ``unknown``, and a request sent again with its key sends it again, as the same task.
      Exception: Whatever the broker raised when Kafka certainly did not store the message
        (``broker.DeliveryFailed`` on Kafka).
    """
    message = actor.message(*args)
    message = message.copy(message_id=store.task_ids.new(actor.actor_name, millis=message.message_timestamp))
    taken_over = False
    if idempotency_key is not None:
        asked = fingerprint(actor, args)
        task = store.add_task(
            task_id=message.message_id,
            kind=actor.actor_name,
            idempotency_key=idempotency_key,
            request_fingerprint=asked,
        )
        if task["taskId"] != message.message_id:
            if task["requestFingerprint"] not in (None, asked):
                raise KeyReused(task["taskId"])
            if task["status"] not in (Status.SUBMITTING, Status.UNKNOWN):
                return Submission(task["taskId"], created=False)
            abandoned_before = datetime.now(UTC) - ABANDONED_AFTER
            if not store.take_over(task["taskId"], abandoned_before=abandoned_before):
                raise SubmissionInProgress(task["taskId"])
            # Its sender died, or Kafka did not confirm it, perhaps after taking it: send it again
            # as the same task, which its actor may then meet again, as it would a redelivery
            # (a user is unique by the task that creates it, a payment by its key).
            message = message.copy(message_id=task["taskId"])
            taken_over = True
    try:
        actor.broker.enqueue(message)
    except BaseException as e:
        # A task taken over stays: Kafka may hold it from its first sender, and its key must keep
        # naming it.  So does a task Kafka may have stored: its key, or its id, settles it.
        if taken_over or (isinstance(e, DeliveryFailed) and e.maybe_stored):
            _mark_unknown(store, message.message_id, actor.actor_name)
            raise OutcomeUnknown(message.message_id, keyed=idempotency_key is not None) from e
        if idempotency_key is not None:
            store.forget_task(message.message_id)
        raise
    if idempotency_key is not None:
        try:
            store.mark_queued(message.message_id, actor.actor_name)
        except Exception:
            # Answering 503 now would have the client send the task again: Kafka already has it.
            logger.exception("Task %s is in Kafka but could not be recorded as queued.", message.message_id)
    return Submission(message.message_id, created=True)


def _mark_unknown(store: TaskStore, task_id: str, kind: str) -> None:
    try:
        store.mark_unknown(task_id, kind)
    except Exception:
        # The answer still says the outcome is unknown, with the task's id; only its status lags.
        logger.exception("Task %s may be in Kafka, and could not be recorded as unknown.", task_id)
