"""Follow-ups: what a processed message leads to, owed by that message until Kafka has it.

Once an actor has run, Dramatiq's middleware sends what the message leads to: its retry
(Retries), its result (Results), the next message of a pipeline (Pipelines), success and failure
callbacks (Callbacks).  Dramatiq only logs an exception raised there, and the worker then acks
the message: had Kafka refused one of those sends, it would be lost with the message's offset
committed.  So a send that Kafka refuses there is owed by the message being processed, and the
message's ack (or nack) makes it first.

:class:`FollowUps` is the one owner of that rule.  ``KafkaBroker`` opens a message's span
(:meth:`FollowUps.of`) around the middleware hooks that follow its actor: ``after_process_message``,
``after_skip_message``, ``before_nack`` and ``after_nack``.  Every send that may be a follow-up goes
through :meth:`FollowUps.send`; the consumer's ack and nack call :meth:`FollowUps.settle`.  A send
the actor itself makes is outside any span: it fails the actor, which is retried.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from .producer import DeliveryFailed


@dataclass
class _Debt:
    #: Sends Kafka refused, in the order they were made.
    owed: list[Callable[[], object]] = field(default_factory=list)
    #: The names of the ``once`` sends made (or owed) for the message.
    made: set[str] = field(default_factory=set)


class FollowUps:
    """Which message each thread is following up, and the sends each message owes.

    Thread-safe: spans are per thread, and a message's debts are only touched by the thread that
    processes it.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        #: Keyed by the identity of the message proxy a consumer handed out (proxies compare equal
        #: to their message, so they cannot be keys); dropped when the proxy is.
        self._debts: dict[int, _Debt] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def of(self, message):
        """Within this block, sends on this thread are follow-ups of ``message``."""
        previous = getattr(self._local, "message", None)
        self._local.message = message
        try:
            yield
        finally:
            self._local.message = previous

    @property
    def current(self):
        """The message this thread is following up, or ``None``."""
        return getattr(self._local, "message", None)

    def send(self, send: Callable[[], object], *, once: str | None = None):
        """Makes a send.  If Kafka refuses it during a message's span, the message owes it.

        Parameters:
          send: Makes the send; raises :class:`DeliveryFailed` if Kafka refuses it.
          once: A name: a send of that name already made, or owed, for the message is not made again
            (the failure result that is stored before a nack, and again by Dramatiq after it).

        Returns:
          What ``send`` returned (``None`` for a ``once`` send skipped).

        Raises:
          DeliveryFailed: If Kafka refused it; it is owed when there is a message to owe it.
        """
        message = self.current
        debt = None if message is None else self._debt(message)
        if once is not None and debt is not None:
            if once in debt.made:
                return None
            debt.made.add(once)
        try:
            return send()
        except DeliveryFailed as e:
            if debt is not None:
                debt.owed.append(send)
                e.owed = True
            raise

    def settle(self, message) -> None:
        """Makes the sends ``message`` owes, in order, before it may be acked or nacked.

        Raises:
          DeliveryFailed: If Kafka still refuses one; it stays owed, with those after it.
        """
        with self._lock:
            debt = self._debts.get(id(message))
        while debt is not None and debt.owed:
            debt.owed[0]()
            debt.owed.pop(0)

    def made(self, message, name: str) -> bool:
        """Tells whether the ``once`` send called ``name`` was made (or is owed) for ``message``."""
        with self._lock:
            debt = self._debts.get(id(message))
        return debt is not None and name in debt.made

    def owes(self, message) -> bool:
        """Tells whether ``message`` owes any send."""
        with self._lock:
            debt = self._debts.get(id(message))
        return debt is not None and bool(debt.owed)

    def _debt(self, message) -> _Debt:
        key = id(message)
        with self._lock:
            debt = self._debts.get(key)
            if debt is None:
                debt = self._debts[key] = _Debt()
                weakref.finalize(message, self._forget, key)
            return debt

    def _forget(self, key: int) -> None:
        with self._lock:
            self._debts.pop(key, None)


#: The process's follow-ups: shared by the broker, its consumers and the result backend.
FOLLOW_UPS = FollowUps()
