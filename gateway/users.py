"""``/api/users``: who a user is, asked of the auth service through Kafka."""

from __future__ import annotations

from flask_smorest import abort

from tasks.auth import get_user
from tasks.schemas import MAX_USER_ID, UserSchema

from . import errors
from .extension import kafka_tasks, reference_config, result_backend
from .parsing import Blueprint

blp = Blueprint("users", __name__, url_prefix="/api/users", description="Users.")


@blp.route("/<int:user_id>", parameters=[{"in": "path", "name": "user_id", "example": 1}])
@blp.response(200, UserSchema)
@errors.documented(blp, 404, 503, 504)
def get(user_id: int):
    """Returns a user.

    As the auth service answers it, through Kafka, within `USER_LOOKUP_TIMEOUT_MS`.
    """
    user = None
    if 1 <= user_id <= MAX_USER_ID:  # no other id is stored: no need to ask the auth service
        timeout = reference_config().user_lookup_timeout_ms
        # This app's own broker's actor: a process may hold several systems (tests), each its broker.
        lookup = kafka_tasks().broker.get_actor(get_user.actor_name).send(user_id)
        user = lookup.get_result(backend=result_backend(), block=True, timeout=timeout)
    if user is None:
        abort(404, message=f"No user {user_id}.")
    return user
