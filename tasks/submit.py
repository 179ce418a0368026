"""Submitting tasks: recorded, then sent, and acknowledged by Kafka before anyone is told so.

The gateway calls these.  A task is recorded as ``queued`` once Kafka has acknowledged its
message: one write.  A task with an ``Idempotency-Key`` is recorded as ``submitting`` before it is
sent, so that a repeated key finds it; if the send fails, that record is removed.  A failed send
propagates: the caller answers 503, and nothing was promised.
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
    if idempotency_key is not None:
        task = store.add_task(task_id=message.message_id, kind=actor.actor_name, idempotency_key=idempotency_key)
        if task["taskId"] != message.message_id:
            if task["status"] == "submitting":
                raise SubmissionInProgress(task["taskId"])
            return Submission(task["taskId"], created=False)
    try:
        actor.broker.enqueue(message)
    except BaseException:
        if idempotency_key is not None:
            store.forget_task(message.message_id)
        raise
    store.mark_queued(message.message_id, actor.actor_name)
    return Submission(message.message_id, created=True)
