"""The payments service (queue ``payments``): records a payment once the auth service vouches for
the user.
"""

from __future__ import annotations

import logging

from dramatiq.results import ResultTimeout

from .app import actors, current_system
from .auth import get_user
from .errors import PaymentKeyConflict, PermanentFailure, UnknownUser, UserLookupTimedOut
from .schemas import PaymentKeySchema, PaymentSchema, current_task_id, load
from .store import TaskKeyMismatch

logger = logging.getLogger(__name__)

QUEUE = "payments"


# The backoff of its retries (the auth service may be restarting) is the configuration's
# PAYMENTS_MIN_BACKOFF_MS and PAYMENTS_MAX_BACKOFF_MS, set when build_broker binds it.
@actors.actor(queue_name=QUEUE, max_retries=20, throws=(PermanentFailure,), track_status=True)
def process_payment(payload: dict, idempotency_key: str | None = None) -> dict:
    """Records a payment exactly once per idempotency key, or once per message when none is given.

    It waits for ``get_user`` with a timeout, and runs in its own worker processes (the Procfile's
    ``payments``), so payment threads that wait never hold up the auth workers that answer them.
    """
    data = load(PaymentSchema(), payload, "payment")
    load(PaymentKeySchema(), {"idempotency_key": idempotency_key}, "idempotency key")
    task_id = current_task_id()
    running = current_system()
    timeout = running.config.get_user_timeout_ms
    try:
        lookup = running.actor(get_user).send(data["userId"])
        user = lookup.get_result(backend=running.backend, block=True, timeout=timeout)
    except ResultTimeout:
        raise UserLookupTimedOut(f"the auth service did not answer within {timeout} ms") from None
    if user is None:
        raise UnknownUser(data["userId"])
    try:
        payment, recorded = running.store.record_payment(
            idempotency_key=idempotency_key,
            user_id=data["userId"],
            amount=data["amount"],
            currency=data["currency"],
            task_id=task_id,
        )
    except TaskKeyMismatch:
        raise PaymentKeyConflict() from None
    if recorded:
        logger.info("process payment for user %s - amount: %s", user["name"], payment["amount"])
    else:
        logger.info("payment %s was already recorded", payment["idempotencyKey"] or f"of task {task_id}")
    return {**payment, "userName": user["name"]}
