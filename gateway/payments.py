"""``/api/payments``: payments, accepted as tasks for the payments service."""

from __future__ import annotations

from marshmallow import Schema

from tasks.schemas import PRINTABLE_ASCII, PaymentSchema, TaskAcceptedSchema, idempotency_key_field
from tasks.submit import submit

from . import errors
from .extension import kafka_tasks
from .parsing import Blueprint
from .statuses import LOCATION_HEADER, accepted

blp = Blueprint("payments", __name__, url_prefix="/api/payments", description="Payments.")


class IdempotencyKeySchema(Schema):
    """The optional ``Idempotency-Key`` header: a repeated key answers with the same task."""

    idempotency_key = idempotency_key_field(
        data_key="Idempotency-Key",
        load_default=None,
        metadata={
            "description": "Makes retries of this request answer with the same task.",
            "pattern": PRINTABLE_ASCII,
        },
    )


#: Built once, not per request: building a marshmallow schema costs more than using it.
payment_schema = PaymentSchema()


@blp.route("/pay", methods=["POST"])
@blp.arguments(payment_schema)
@blp.arguments(IdempotencyKeySchema(), location="headers", as_kwargs=True)
@blp.response(202, TaskAcceptedSchema, headers=LOCATION_HEADER)
@errors.documented(blp, 400, 409, 413, 415, 503)
def pay(payment: dict, idempotency_key: str | None = None):
    """Pays, once Kafka has stored the task.  A repeated ``Idempotency-Key`` answers with the same task."""
    tasks = kafka_tasks()
    submission = submit(
        tasks.actor("process_payment"),
        payment_schema.dump(payment),
        idempotency_key,
        store=tasks.store,
        idempotency_key=idempotency_key,
    )
    return accepted(submission.task_id)
