"""``/api/auth``: sign-ups, accepted as tasks for the auth service."""

from __future__ import annotations

from flask_smorest import Blueprint

from tasks.auth import create_user
from tasks.schemas import SignUpSchema, TaskAcceptedSchema
from tasks.submit import submit

from . import errors
from .statuses import LOCATION_HEADER, accepted

blp = Blueprint("auth", __name__, url_prefix="/api/auth", description="Sign-ups.")


@blp.route("/sign-up", methods=["POST"])
@blp.arguments(SignUpSchema)
@blp.response(202, TaskAcceptedSchema, headers=LOCATION_HEADER)
@errors.documented(blp, 400, 413, 415, 503)
def sign_up(sign_up: dict):
    """Signs a user up, once Kafka has stored the task; the task's status tells how it ended."""
    submission = submit(create_user, SignUpSchema().dump(sign_up))
    return accepted(submission.task_id)
