"""Submitting tasks: recorded, then sent, and acknowledged by Kafka before anyone is told so.

The gateway calls these.  A task is recorded as ``submitting`` first, so that a repeated
``Idempotency-Key`` finds it; only once Kafka has acknowledged the message does it become
``queued``.  If the send fails, the record is removed and the error propagates: the caller
answers 503, and nothing was promised.
"""

from __future__ import annotations

from dataclasses import dataclass

import dramatiq

from .store import get_store


class SubmissionInProgress(Exception):
    """A request with the same idempotency key is still being sent to Kafka."""


@dataclass(frozen=True)
class Submission:
    task_id: str
    #: False when an earlier request with the same idempotency key created the task.
    created: bool


def submit(actor: dramatiq.Actor, *args, idempotency_key: str | None = None) -> Submission:
    """Sends ``actor(*args)`` once Kafka can take it, recording its status.

    Raises:
      SubmissionInProgress: If an earlier request with this key has not finished sending.
      Exception: Whatever the broker raised when Kafka did not acknowledge the message
        (``broker.DeliveryFailed`` on Kafka).
    """
    message = actor.message(*args)
    store = get_store()
    task = store.add_task(task_id=message.message_id, kind=actor.actor_name, idempotency_key=idempotency_key)
    if task["taskId"] != message.message_id:
        if task["status"] == "submitting":
            raise SubmissionInProgress(task["taskId"])
        return Submission(task["taskId"], created=False)
    try:
        actor.broker.enqueue(message)
    except BaseException:
        store.forget_task(message.message_id)
        raise
    store.mark_queued(message.message_id)
    return Submission(message.message_id, created=True)
