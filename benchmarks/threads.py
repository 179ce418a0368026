"""Running one function from several threads at once, as load generators do."""

from __future__ import annotations

import threading
import time


def in_threads(target, count: int) -> float:
    """Runs ``target(i)`` for ``i`` in ``range(count)``, each in its own thread, and waits for all.

    Returns:
      The seconds from the first thread's start to the last one's end.
    """
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started
