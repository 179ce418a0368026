"""Waiting for a positive signal: one poll loop for every test, saying what it waited for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    predicate: Callable[[], T],
    *,
    timeout: float = 10.0,
    what: str | None = None,
    interval: float = 0.02,
    progress: Callable[[], object] | None = None,
) -> T:
    """Calls ``predicate`` until it returns something true, and returns that.

    Parameters:
      predicate: What to wait for; called at least once.
      timeout: How long to wait, in seconds.
      what: What is waited for, said in the failure.
      interval: How long to sleep between calls, in seconds.
      progress: Tells how far it got, for the failure (by default, the last value returned).

    Raises:
      AssertionError: If ``timeout`` passes first, saying what it waited for and how far it got.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            got = progress() if progress is not None else value
            raise AssertionError(
                f"waited {timeout:g}s for {what or getattr(predicate, '__name__', 'a condition')}, "
                f"in vain (got {got!r})"
            )
        time.sleep(interval)
