"""Which messages a broker may send, and which records a consumer may hand out to Dramatiq's worker.

A record that decodes as JSON is not yet a message Dramatiq can run.  A field of the wrong type
(``"options": null``) makes Dramatiq's consumer thread raise on every read of it, a crash loop.
A ``queue_name`` other than the consumer's makes the worker thread that finishes it look for a
consumer it does not have: the message is never acked, and its partition's commits stop there.
Arguments that the actor's function cannot take would be retried for hours, though no retry can
change them.  Options that Dramatiq's middleware computes with but cannot act on (a backoff of
``inf``, ``NaN``, or so large that the backoff overflows) fail only after the actor ran, when
the retry they should make is lost.  Each of these is dead-lettered with its reason instead, and
the options are refused at ``send`` already (:func:`check_options`).

An ``eta`` is what Dramatiq makes of it: a null one is dropped, one that is no number is run now
(Dramatiq warns and runs it), and one that is no finite number cannot fall due and is refused.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from numbers import Real

import dramatiq
from dramatiq.errors import ActorNotFound

logger = logging.getLogger(__name__)

#: The fields of a message, and the types Dramatiq's worker relies on.
FIELDS = {
    "queue_name": str,
    "actor_name": str,
    "args": tuple,
    "kwargs": dict,
    "options": dict,
    "message_id": str,
    "message_timestamp": Real,
}

#: The longest backoff an option may ask for (ms), ten years: Dramatiq doubles a backoff up to 2**32
#: times and multiplies it by up to 2, which stays a finite number from this bound on.
MAX_BACKOFF_OPTION = 10 * 365 * 86_400_000

#: Options Dramatiq or its middleware compute with: finite numbers of at least 0 when present, and
#: at most the bound given.  ``retries`` has no default to fall back on, so it may not be null.
NUMERIC_OPTIONS: dict[str, tuple[bool, float]] = {
    # name: (nullable, largest value)
    "retries": (False, math.inf),
    "max_retries": (True, math.inf),
    "min_backoff": (True, MAX_BACKOFF_OPTION),
    "max_backoff": (True, MAX_BACKOFF_OPTION),
    "time_limit": (True, math.inf),
    "max_age": (True, math.inf),
}


class BadMessage(ValueError):
    """A message that cannot be sent, or a record that is not a message a consumer can hand out;
    its text is the reason."""


def check_options(options: dict) -> None:
    """Checks the options Dramatiq's middleware computes with, and ``eta``.

    Raises:
      BadMessage: Naming the option that no middleware could act on.
    """
    for name, (nullable, largest) in NUMERIC_OPTIONS.items():
        if name in options:
            _check_number(name, options[name], nullable=nullable, largest=largest)
    eta = options.get("eta")
    if _is_number(eta) and not math.isfinite(eta):
        raise BadMessage(f"malformed message: option eta is {eta}, not a finite number")


def normalised_eta(message: dramatiq.Message) -> dramatiq.Message:
    """Returns the message with its ``eta`` as Dramatiq reads it: dropped when null, and dropped (so
    run now) when it is no number, with Dramatiq's warning."""
    if "eta" not in message.options or _is_number(message.options["eta"]):
        return message
    if message.options["eta"] is not None:
        logger.warning("Invalid eta value for message %r: %r; it runs now.", message.message_id, message.options["eta"])
    options = {name: value for name, value in message.options.items() if name != "eta"}
    return dramatiq.Message(
        queue_name=message.queue_name,
        actor_name=message.actor_name,
        args=message.args,
        kwargs=message.kwargs,
        options=options,
        message_id=message.message_id,
        message_timestamp=message.message_timestamp,
    )


def decode(value: bytes | None, *, queue_name: str, broker: dramatiq.Broker) -> dramatiq.Message:
    """Decodes a record's value into a message of ``queue_name`` that ``broker`` can run.

    Raises:
      BadMessage: Saying why it is not one.
    """
    try:
        message = dramatiq.Message.decode(value)
    except Exception as e:
        raise BadMessage(f"undecodable message: {type(e).__name__}: {e.__cause__ or e}") from None
    for name, kind in FIELDS.items():
        if not isinstance(getattr(message, name), kind) or isinstance(getattr(message, name), bool):
            raise BadMessage(f"malformed message: {name} is {_json_type(getattr(message, name))}")
    check_options(message.options)
    message = normalised_eta(message)
    if message.queue_name != queue_name:
        raise BadMessage(f"a message of queue {message.queue_name!r:.100} on a topic of queue {queue_name!r}")
    try:
        actor = broker.get_actor(message.actor_name)
    except ActorNotFound:
        return message  # Dramatiq's worker dead-letters it, with its ActorNotFound, for a replay once declared.
    try:
        _signature(actor.fn).bind(*message.args, **message.kwargs)
    except TypeError as e:
        raise BadMessage(f"arguments that actor {message.actor_name} cannot take: {e}") from None
    return message


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _check_number(name: str, value, *, nullable: bool, largest: float) -> None:
    if value is None and nullable:
        return
    if not _is_number(value):
        raise BadMessage(f"malformed message: option {name} is {_json_type(value)}, not a number")
    if not math.isfinite(value) or value < 0:
        raise BadMessage(f"malformed message: option {name} is {value}, not a finite number of at least 0")
    if value > largest:
        raise BadMessage(f"malformed message: option {name} is {value}, more than the largest, {largest:.0f}")


@functools.cache
def _signature(fn) -> inspect.Signature:
    return inspect.signature(fn)


def _json_type(value) -> str:
    names = {
        type(None): "null",
        bool: "a boolean",
        str: "a string",
        dict: "an object",
        tuple: "an array",
        list: "an array",
    }
    return names.get(type(value), "a number" if isinstance(value, Real) else type(value).__name__)
