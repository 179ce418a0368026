"""``/api/auth``: sign-ups, accepted as tasks for the auth service."""

from __future__ import annotations

from tasks.auth import create_user
from tasks.schemas import SignUpSchema, TaskAcceptedSchema

from . import errors
from .extension import tasks
from .parsing import Blueprint, IdempotencyKeySchema
from .statuses import LOCATION_HEADER

blp = Blueprint("auth", __name__, url_prefix="/api/auth", description="Sign-ups.")

#: Built once, not per request: building a marshmallow schema costs more than using it.
sign_up_schema = SignUpSchema()


@blp.route("/sign-up", methods=["POST"])
@blp.arguments(sign_up_schema, example={"name": "Ada Lovelace", "email": "ada@example.com"})
@blp.arguments(IdempotencyKeySchema(), location="headers", as_kwargs=True)
@blp.response(202, TaskAcceptedSchema, headers=LOCATION_HEADER)
@errors.documented(blp, 400, 409, 413, 415, 422, 503)
def sign_up(sign_up: dict, idempotency_key: str | None = None):
    """Signs a user up.

    Answers 202 once Kafka has stored the task; its status URL tells how it ended. A repeated
    `Idempotency-Key` answers with the same task.
    """
    return tasks.enqueue(create_user, sign_up_schema.dump(sign_up), idempotency_key=idempotency_key)
