"""The payments service (queue ``payments``): records a payment once the auth service vouches for
the user.
"""

from __future__ import annotations

import logging
import os

import dramatiq
from dramatiq.results import ResultTimeout

from .app import backend, broker
from .auth import get_user
from .errors import PaymentKeyConflict, PermanentFailure, UnknownUser, UserLookupTimedOut
from .schemas import PaymentKeySchema, PaymentSchema, current_task_id, load
from .store import TaskKeyMismatch, get_store

logger = logging.getLogger(__name__)

QUEUE = "payments"

#: How long a payment waits for the auth service before it is retried (ms).
GET_USER_TIMEOUT_MS = int(os.environ.get("GET_USER_TIMEOUT_MS", "5000"))

#: Backoff of payment retries (ms); the auth service may be restarting.
MIN_BACKOFF_MS = int(os.environ.get("PAYMENTS_MIN_BACKOFF_MS", "1000"))
MAX_BACKOFF_MS = int(os.environ.get("PAYMENTS_MAX_BACKOFF_MS", "60000"))


@dramatiq.actor(queue_name=QUEUE, broker=broker, max_retries=20, min_backoff=MIN_BACKOFF_MS,
                max_backoff=MAX_BACKOFF_MS, throws=(PermanentFailure,), track_status=True)
def process_payment(payload: dict, idempotency_key: str | None = None) -> dict:
    """Records a payment exactly once per idempotency key, or once per message when none is given.

    It waits for ``get_user`` with a timeout, and runs in its own worker processes (the Procfile's
    ``payments``), so payment threads that wait never hold up the auth workers that answer them.
    """
    data = load(PaymentSchema(), payload, "payment")
    load(PaymentKeySchema(), {"idempotency_key": idempotency_key}, "idempotency key")
    task_id = current_task_id()
    try:
        user = get_user.send(data["userId"]).get_result(backend=backend, block=True, timeout=GET_USER_TIMEOUT_MS)
    except ResultTimeout:
        raise UserLookupTimedOut(f"the auth service did not answer within {GET_USER_TIMEOUT_MS} ms") from None
    if user is None:
        raise UnknownUser(data["userId"])
    try:
        payment, recorded = get_store().record_payment(
            idempotency_key=idempotency_key, user_id=data["userId"], amount=data["amount"],
            currency=data["currency"], task_id=task_id,
        )
    except TaskKeyMismatch:
        raise PaymentKeyConflict() from None
    if recorded:
        logger.info("process payment for user %s - amount: %s", user["name"], payment["amount"])
    else:
        logger.info("payment %s was already recorded", payment["idempotencyKey"] or f"of task {task_id}")
    return {**payment, "userName": user["name"]}
