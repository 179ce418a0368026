"""A task's lifecycle: its statuses, and which may follow which, written down once.

The store derives its conditional writes from :data:`ALLOWED` (a status is written over another
only where the table allows it), the status middleware reads what is final from here, and the API
documents the public statuses from :data:`PUBLIC`.  Pure data, no I/O.
"""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """A task's status.  Compares equal to its value, as the database and the API hold it."""

    #: Being sent to Kafka under an ``Idempotency-Key`` (shown as ``queued``): a repeated key finds it.
    SUBMITTING = "submitting"
    #: Kafka did not confirm it in time, and may have stored it all the same: its worker tells, or
    #: a request sent again with its ``Idempotency-Key`` sends it again, as the same task.
    UNKNOWN = "unknown"
    #: Kafka has it; no worker has started it.
    QUEUED = "queued"
    #: A worker is running it.
    RUNNING = "running"
    #: It failed and waits for its retry.
    RETRYING = "retrying"
    #: It ran to the end.
    SUCCEEDED = "succeeded"
    #: It failed for good: a permanent failure, the answer rather than an accident.
    FAILED = "failed"
    #: Its retries ran out, or it was rejected.
    DEAD = "dead"


_IN_FLIGHT = frozenset({Status.RUNNING, Status.RETRYING})
_ENDS = frozenset({Status.SUCCEEDED, Status.FAILED, Status.DEAD})

#: Which statuses may be written over each status.  A worker's status wins over the gateway's
#: (``queued`` only replaces ``submitting``); a status on the way never replaces an end; success
#: is never replaced (a redelivery of a task that succeeded may fail, yet its effect is there);
#: a failed or dead task may still succeed when a dead-letter replay runs it again.
ALLOWED: dict[Status, frozenset[Status]] = {
    Status.SUBMITTING: frozenset({Status.QUEUED, Status.UNKNOWN}) | _IN_FLIGHT | _ENDS,
    # Claimed by a request sent again (back to submitting), or found by its worker.
    Status.UNKNOWN: frozenset({Status.SUBMITTING, Status.UNKNOWN}) | _IN_FLIGHT | _ENDS,
    Status.QUEUED: _IN_FLIGHT | _ENDS,
    Status.RUNNING: _IN_FLIGHT | _ENDS,
    Status.RETRYING: _IN_FLIGHT | _ENDS,
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: _ENDS,
    Status.DEAD: _ENDS,
}

#: Statuses after which a task is over.
FINAL = _ENDS

#: Ends that are answers a caller may act on: a redelivery of such a task is skipped, not run again.
SETTLED_FAILURES = frozenset({Status.FAILED, Status.DEAD})

#: The statuses a caller sees (``submitting`` shows as ``queued``).
PUBLIC: tuple[str, ...] = tuple(status.value for status in Status if status is not Status.SUBMITTING)


def may_follow(new: Status, old: Status) -> bool:
    """Tells whether a task in status ``old`` may be moved to ``new``."""
    return Status(new) in ALLOWED[Status(old)]


def sources(new: Status) -> frozenset[Status]:
    """Returns the statuses a task may be in for ``new`` to be written over it."""
    return frozenset(old for old, allowed in ALLOWED.items() if Status(new) in allowed)


def shown(status: str) -> str:
    """Returns the status a caller sees for a stored one."""
    return Status.QUEUED.value if status == Status.SUBMITTING else str(status)
