"""Which records are messages that a consumer may hand out to Dramatiq's worker.

A record that decodes as JSON is not yet a message Dramatiq can run.  A field of the wrong type
(``"options": null``) makes Dramatiq's consumer thread raise on every read of it, a crash loop.
A ``queue_name`` other than the consumer's makes the worker thread that finishes it look for a
consumer it does not have: the message is never acked, and its partition's commits stop there.
Arguments that the actor's function cannot take would be retried for hours, though no retry can
change them.  Each of these is dead-lettered with its reason instead.
"""

from __future__ import annotations

import functools
import inspect
from numbers import Real

import dramatiq
from dramatiq.errors import ActorNotFound

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

#: Options Dramatiq or its middleware do arithmetic with: numbers when present.  ``eta`` and
#: ``retries`` have no default to fall back on, so they may not be null either.
NUMERIC_OPTIONS = {
    "eta": False,
    "retries": False,
    "max_retries": True,
    "min_backoff": True,
    "max_backoff": True,
    "time_limit": True,
    "max_age": True,
}


class BadMessage(ValueError):
    """A record that is not a message this consumer can hand out; its text is the reason."""


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
    for name, nullable in NUMERIC_OPTIONS.items():
        if name in message.options:
            option = message.options[name]
            if not (isinstance(option, Real) and not isinstance(option, bool)) and not (nullable and option is None):
                raise BadMessage(f"malformed message: option {name} is {_json_type(option)}, not a number")
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
