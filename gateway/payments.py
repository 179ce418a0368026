"""``/api/payments``: payments, accepted as tasks for the payments service."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

from tasks.payments import process_payment
from tasks.schemas import PaymentSchema, TaskAcceptedSchema
from tasks.submit import submit

from . import errors
from .parsing import Blueprint
from .statuses import LOCATION_HEADER, accepted

blp = Blueprint("payments", __name__, url_prefix="/api/payments", description="Payments.")

#: The longest idempotency key: the store's column.
MAX_IDEMPOTENCY_KEY_LENGTH = 255

#: An idempotency key's characters: printable ASCII, as HTTP header values carry them unchanged.
PRINTABLE_ASCII = r"^[\x20-\x7e]+$"


def _printable_ascii(value: str) -> None:
    if not (value.isascii() and value.isprintable()):
        raise ValidationError("Must be printable ASCII characters.")


class IdempotencyKeySchema(Schema):
    """The optional ``Idempotency-Key`` header: a repeated key answers with the same task."""

    idempotency_key = fields.String(
        data_key="Idempotency-Key", load_default=None,
        validate=[
            validate.Length(min=1, max=MAX_IDEMPOTENCY_KEY_LENGTH),
            _printable_ascii,
        ],
        metadata={"description": "Makes retries of this request answer with the same task.",
                  "pattern": PRINTABLE_ASCII},
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
    submission = submit(process_payment, payment_schema.dump(payment), idempotency_key,
                        idempotency_key=idempotency_key)
    return accepted(submission.task_id)
