"""What librdkafka reports, through Python logging, and each condition once.

A librdkafka client logs to standard error by itself, and while Kafka is down it says so every few
hundred milliseconds, for every client of a process: thousands of lines a minute that bury what
else happened.  :class:`ClientLog` is a client's ``logger`` and ``error_cb``: its reports go to the
``broker.kafka`` logger, and a condition that repeats is logged when it starts, then at most once a
``window`` with how often it came.  :meth:`ClientLog.ok` (a send acknowledged, records fetched)
logs, once, that the client works again.  :class:`ConditionLog` does the same for anything else
that fails for a while (a database).
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import KafkaError

logger = logging.getLogger("broker.kafka")

#: librdkafka's syslog levels, as Python's.
_LEVELS = {
    0: logging.CRITICAL,
    1: logging.CRITICAL,
    2: logging.CRITICAL,
    3: logging.ERROR,
    4: logging.WARNING,
    5: logging.INFO,
    6: logging.INFO,
    7: logging.DEBUG,
}


class _Reporter:
    """The object librdkafka's ``logger`` setting takes: it calls ``log(level, format, *args)``."""

    def __init__(self, log: ClientLog) -> None:
        self._log = log

    def log(self, level: int, fmt: str, *args) -> None:
        # librdkafka passes (facility, client name, text); the facility says what kind of report it is.
        facility, text = (args[0], args[-1]) if len(args) == 3 else ("", fmt % args if args else fmt)
        self._log.report(_LEVELS.get(level, level), f"log {facility}", f"{text} [{facility}]" if facility else text)


class ConditionLog:
    """Logs what goes wrong with one thing, each condition when it starts and then at most once a
    ``window``, with how often it came; and, once, that the thing works again.

    For conditions that repeat while they last (Kafka or a database down): a line per attempt would
    bury what else happened.  :class:`ClientLog` is the one of a librdkafka client.

    Parameters:
      subject(str): What the lines are about (``"The database, as the web process sees it"``).
      logger(logging.Logger): Where they go.
      window(float): How long a condition that repeats stays quiet, in seconds.
    """

    def __init__(self, subject: str, *, logger: logging.Logger = logger, window: float = 60) -> None:
        self.subject = subject
        self.logger = logger
        self.window = window
        self._lock = threading.Lock()
        #: condition -> (when it was last logged, repeats since)
        self._seen: dict[str, tuple[float, int]] = {}

    def report(self, level: int, condition: str, text: str, *, now: float | None = None, exc_info=None) -> bool:
        """Logs a report, unless it is a warning or worse and the same condition was logged within
        the window (debug and information reports all pass).

        Parameters:
          exc_info: An exception whose traceback the line carries, when it is logged.

        Returns:
          Whether it was logged.
        """
        if level < logging.WARNING:
            self.logger.log(level, "%s: %s", self.subject, text, exc_info=exc_info)
            return True
        now = time.monotonic() if now is None else now
        with self._lock:
            last, repeats = self._seen.get(condition, (None, 0))
            if last is not None and now - last < self.window:
                self._seen[condition] = (last, repeats + 1)
                return False
            self._seen[condition] = (now, 0)
        more = f" ({repeats} more like it in the last {self.window:.0f} s)" if repeats else ""
        self.logger.log(level, "%s: %s%s", self.subject, text, more, exc_info=exc_info)
        return True

    def ok(self) -> None:
        """Says, once, that the thing works again after reporting problems.  Cheap when there were none."""
        if not self._seen:
            return
        with self._lock:
            if not self._seen:
                return
            problems = sum(1 + repeats for _, repeats in self._seen.values())
            self._seen.clear()
        self.logger.info("%s works again (after %d problem reports).", self.subject, problems)


class ClientLog(ConditionLog):
    """The ``logger`` and ``error_cb`` of one librdkafka client, to the ``broker.kafka`` logger.

    Parameters:
      client(str): What the client is, for the log lines (``"consumer of payments"``).
      window(float): How long a condition that repeats stays quiet, in seconds.
    """

    def __init__(self, client: str, *, window: float = 60) -> None:
        super().__init__(f"Kafka {client}", window=window)
        self.client = client

    def config(self) -> dict:
        """The librdkafka settings that route this client's reports here."""
        return {"logger": _Reporter(self), "error_cb": self.error}

    def error(self, error: KafkaError) -> None:
        """librdkafka's ``error_cb``: a client error (fatal ones are the client's owner's to handle)."""
        level = logging.ERROR if error.fatal() else logging.WARNING
        self.report(level, f"error {error.code()}", error.str())
