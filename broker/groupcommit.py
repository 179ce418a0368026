"""Group commit: writes that arrive while another is being committed share the next transaction.

A sign-up ends with one small write, its status.  Under load, many request threads reach that
write at once and queue for the database (SQLite takes one writer at a time), each paying for its
own transaction.  With group commit, the first thread in line takes every write waiting behind
it and commits them together; the others wake up to find theirs done.  Each caller still returns
only once its own write is committed, so nothing is promised earlier than before.

This module knows nothing of databases: it is handed the function that commits a batch.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Sequence
from typing import Any


class CommitInterrupted(Exception):
    """The thread that was committing a batch was interrupted: whether this write was
    committed is not known.
    """


class _Write:
    __slots__ = ("_woken", "done", "error", "item", "result")

    def __init__(self, item: Any) -> None:
        self.item = item
        #: Released when this write is settled (done or failed), or when its caller is to lead.
        #: A bare lock, not a ``threading.Event``: an Event builds a ``Condition`` and, per wait,
        #: another lock (the difference is measured in docs/benchmarks.md).
        self._woken = threading.Lock()
        self._woken.acquire()
        #: Committed.
        self.done = False
        #: Why it was not committed.
        self.error: Exception | None = None
        #: What the commit said of this item, if anything.
        self.result: Any = None

    def wait(self) -> None:
        """Blocks until :meth:`wake` is called (returns at once if it already was)."""
        self._woken.acquire()

    def wake(self) -> None:
        """Wakes the caller, now or at its next :meth:`wait`; waking twice is waking once."""
        try:
            self._woken.release()
        except RuntimeError:
            pass  # already woken, not waited for since

    @property
    def settled(self) -> bool:
        """Committed, or known not to be."""
        return self.done or self.error is not None


class GroupCommit:
    """Commits writes in batches, one batch at a time, each caller waiting for its own.

    Parameters:
      commit(callable): Commits a batch of items in one transaction, all or none; it is never
        called by two threads at once.  It may return one result per item, in order, which
        each caller gets back (None: no results).

    Callers queue in order.  The first in the queue leads: it commits every write queued so far,
    then wakes each of their callers at once, and the first caller still waiting leads next.  A
    batch that fails is not retried as a batch: its leader commits each of its items alone, so
    that one bad item fails only its own caller, and every caller gets its own exception.
    """

    def __init__(self, commit: Callable[[Sequence[Any]], None]) -> None:
        self._commit = commit
        self._queue: collections.deque[_Write] = collections.deque()
        self._lock = threading.Lock()

    def __call__(self, item: Any) -> Any:
        """Commits ``item``, together with whatever else is waiting.

        Returns:
          What the commit returned for this item (None if it returned no results).

        Raises:
          Exception: Whatever ``commit`` raised for this item committed alone.
        """
        write = _Write(item)
        with self._lock:
            self._queue.append(write)
            leads = len(self._queue) == 1
        try:
            if not leads:
                write.wait()
            if not write.settled:
                self._lead()
        except BaseException:
            # Interrupted while waiting (Dramatiq's time limits and shutdown raise in a worker's
            # thread): leave the queue, and if this caller was to lead, hand that on.
            if not write.settled:
                self._leave(write)
            raise
        if write.error is not None:
            raise write.error
        return write.result

    def _leave(self, write: _Write) -> None:
        with self._lock:
            leading = bool(self._queue) and self._queue[0] is write
            if write in self._queue:
                self._queue.remove(write)
            following = self._queue[0] if leading and self._queue else None
        if following is not None:
            following.wake()

    def _lead(self) -> None:
        with self._lock:
            batch = list(self._queue)
        try:
            self._commit_each_or_all(batch)
        finally:
            # Also when this thread is interrupted: no caller may wait forever.
            for write in batch:
                if not write.settled:
                    write.error = CommitInterrupted("the thread committing this write was interrupted")
            with self._lock:
                # The batch is at the front, less any caller that left meanwhile: count nothing.
                members = set(batch)
                while self._queue and self._queue[0] in members:
                    self._queue.popleft()
                following = self._queue[0] if self._queue else None
            for write in batch:
                write.wake()
            if following is not None:
                following.wake()

    def _commit_each_or_all(self, batch: list[_Write]) -> None:
        if len(batch) > 1:
            try:
                results = self._commit([write.item for write in batch])
            except Exception:
                pass
            else:
                for write, result in zip(batch, results or [None] * len(batch), strict=True):
                    write.result, write.done = result, True
                return
        for write in batch:
            try:
                results = self._commit([write.item])
            except Exception as e:
                write.error = e
            else:
                write.result, write.done = (results or [None])[0], True
