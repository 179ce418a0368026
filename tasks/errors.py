"""Why a task fails for good, or is retried.

A :class:`PermanentFailure` is the answer, not an accident: retrying cannot change it, so actors
list it in ``throws`` and Dramatiq's Retries middleware lets it fail at once.  Its message is the
reason a caller sees in the task's status and in the dead letter's headers.
"""

import dramatiq

from broker.status import PermanentFailure


class InvalidPayload(PermanentFailure):
    """The task's payload does not pass the schema."""


class EmailAlreadyRegistered(PermanentFailure):
    def __init__(self) -> None:
        super().__init__("email already registered")


class UnknownUser(PermanentFailure):
    def __init__(self, user_id: int) -> None:
        super().__init__(f"unknown user {user_id}")


class PaymentKeyConflict(PermanentFailure):
    def __init__(self) -> None:
        super().__init__("this task already recorded a payment under another idempotency key")


class UserLookupTimedOut(dramatiq.Retry):
    """The auth service did not answer in time; the payment is retried with backoff.  A
    ``dramatiq.Retry``: an expected condition, logged in one line, not an error with a traceback."""
