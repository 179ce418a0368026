"""``/api/payments``: payments, accepted as tasks for the payments service."""

from __future__ import annotations

from tasks.payments import process_payment
from tasks.schemas import PaymentSchema, TaskAcceptedSchema

from . import errors
from .extension import tasks
from .parsing import Blueprint, IdempotencyKeySchema
from .statuses import LOCATION_HEADER

blp = Blueprint("payments", __name__, url_prefix="/api/payments", description="Payments.")


#: Built once, not per request: building a marshmallow schema costs more than using it.
payment_schema = PaymentSchema()


@blp.route("/pay", methods=["POST"])
@blp.arguments(payment_schema, example={"userId": 1, "amount": "42.00", "currency": "EUR"})
@blp.arguments(IdempotencyKeySchema(), location="headers", as_kwargs=True)
@blp.response(202, TaskAcceptedSchema, headers=LOCATION_HEADER)
@errors.documented(blp, 400, 409, 413, 415, 422, 503)
def pay(payment: dict, idempotency_key: str | None = None):
    """Pays, for a user.

    Answers 202 once Kafka has stored the task; its status URL tells how it ended. A repeated
    `Idempotency-Key` answers with the same task, and charges nothing more.
    """
    # The key is also the task's argument: the payment is recorded once per key (see tasks.payments).
    return tasks.enqueue(
        process_payment, payment_schema.dump(payment), idempotency_key, idempotency_key=idempotency_key
    )
