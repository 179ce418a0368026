"""Why a task fails for good.

A :class:`PermanentFailure` is the answer, not an accident: retrying cannot change it, so actors
list it in ``throws`` and Dramatiq's Retries middleware lets it fail at once.  Its message is the
reason a caller sees in the task's status and in the dead letter's headers.
"""


class PermanentFailure(Exception):
    """A task that must not be retried."""


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


class UserLookupTimedOut(Exception):
    """The auth service did not answer in time; the payment is retried with backoff."""
