"""Group commit: writes that arrive while another is being committed share the next transaction.

A sign-up ends with one small write, its status.  Under load, many request threads reach that
write at once and queue for the database (SQLite takes one writer at a time), each paying for its
own transaction.  With group commit, the first thread in line takes every write waiting behind
it and commits them together; the others wake up to find theirs done.  Each caller still returns
only once its own write is committed, so nothing is promised earlier than before.

This module knows nothing of databases: it is handed the function that commits a batch.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence


class _Write:
    __slots__ = ("item", "done", "alone")

    def __init__(self, item: Any) -> None:
        self.item = item
        #: Committed, by this thread or another.
        self.done = False
        #: Its batch failed: the caller commits it on its own, to get its own error (or success).
        self.alone = False


class GroupCommit:
    """Commits writes in batches, one batch at a time, each caller waiting for its own.

    Parameters:
      commit(callable): Commits a batch of items in one transaction, all or none; it is never
        called by two threads at once.

    A batch that fails is not retried as a batch: each of its callers commits its own item alone,
    so that one bad item fails only its caller, and every caller gets its own exception.
    """

    def __init__(self, commit: Callable[[Sequence[Any]], None]) -> None:
        self._commit = commit
        self._pending: list[_Write] = []
        self._pending_lock = threading.Lock()
        self._turn = threading.Lock()

    def __call__(self, item: Any) -> None:
        """Commits ``item``, together with whatever else is waiting.

        Raises:
          Exception: Whatever ``commit`` raised for this item committed alone.
        """
        write = _Write(item)
        with self._pending_lock:
            self._pending.append(write)
        with self._turn:
            if write.done:
                return
            if not write.alone:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                if len(batch) > 1:
                    try:
                        self._commit([w.item for w in batch])
                    except Exception:
                        for w in batch:
                            w.alone = True
                    else:
                        for w in batch:
                            w.done = True
                        return
            self._commit([item])
