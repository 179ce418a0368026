"""The auth service (queue ``auth``): stores users and answers who they are."""

from __future__ import annotations

import logging

from .app import actors, current_system
from .errors import EmailAlreadyRegistered, PermanentFailure
from .schemas import SignUpSchema, current_task_id, load
from .store import EmailTaken

logger = logging.getLogger(__name__)

QUEUE = "auth"


@actors.actor(queue_name=QUEUE, max_retries=10, throws=(PermanentFailure,), track_status=True)
def create_user(payload: dict) -> dict:
    """Stores a user.  A redelivered message returns the user it created; another sign-up with the
    same email fails for good with "email already registered".
    """
    data = load(SignUpSchema(), payload, "sign-up")
    task_id = current_task_id()
    try:
        user = current_system().store.create_user(name=data["name"], email=data["email"], task_id=task_id)
    except EmailTaken:
        raise EmailAlreadyRegistered() from None
    logger.info("created user %s <%s>", user["id"], user["email"])
    return user


@actors.actor(queue_name=QUEUE, store_results=True, max_retries=0, priority=0)
def get_user(user_id: int) -> dict | None:
    """Returns the user with this id, or ``None``."""
    return current_system().store.get_user(int(user_id))
