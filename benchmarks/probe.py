"""Counting actor runs, in this process or in worker processes.

A :class:`Probe` notes when each run starts (and, optionally, one sample per run, such as a
latency).  Throughput is counted from the first run to the last, so that start-up (imports, a
consumer group's join) is not part of it.  In a worker process, :func:`process_probe` returns a
probe that writes its progress to ``$BENCH_PROBE_DIR/<pid>.progress`` every 0.2 s and everything
to ``<pid>.json`` when the process exits; :func:`collect` reads those back.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from pathlib import Path

#: How often a worker process reports its count (s).
PROGRESS_INTERVAL = 0.2


class Probe:
    """Thread-safe counts and samples of actor runs."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.samples: list[float] = []

    def hit(self, sample: float | None = None) -> None:
        """Notes one run (call it first thing in the actor)."""
        now = time.time()
        with self._lock:
            self.count += 1
            if self.count == 1:
                self.first = now
            self.last = now
            if sample is not None:
                self.samples.append(sample)
            self._lock.notify_all()

    def wait(self, count: int, timeout: float) -> bool:
        """Waits until ``count`` runs were noted; returns whether they were."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.count < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True

    def rate(self) -> float:
        """Runs per second from the first run to the last."""
        return rate(self.count, self.first, self.last)

    def snapshot(self) -> dict:
        with self._lock:
            return {"count": self.count, "first": self.first, "last": self.last, "samples": list(self.samples)}


def rate(count: int, first: float, last: float) -> float:
    """Runs per second over ``count`` runs whose starts span ``first`` to ``last``."""
    if count < 2 or last <= first:
        return float("nan")
    return (count - 1) / (last - first)


def process_probe() -> Probe:
    """Returns a probe that reports to ``$BENCH_PROBE_DIR`` (a plain probe when that is unset)."""
    probe = Probe()
    folder = os.environ.get("BENCH_PROBE_DIR")
    if not folder:
        return probe
    base = Path(folder) / str(os.getpid())

    def write(suffix: str, data: dict) -> None:
        tmp = base.with_suffix(suffix + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(base.with_suffix(suffix))

    def report() -> None:
        while True:
            time.sleep(PROGRESS_INTERVAL)
            write(".progress", {"count": probe.count})

    threading.Thread(target=report, name="bench-probe", daemon=True).start()
    atexit.register(lambda: write(".json", probe.snapshot()))
    return probe


def progress(folder: Path) -> int:
    """Returns how many runs the worker processes reporting to ``folder`` have noted so far."""
    total = 0
    for path in Path(folder).glob("*.progress"):
        try:
            total += json.loads(path.read_text())["count"]
        except (OSError, ValueError, KeyError):
            pass
    return total


def wait_progress(folder: Path, count: int, timeout: float) -> bool:
    """Waits until the worker processes noted ``count`` runs; returns whether they did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if progress(folder) >= count:
            return True
        time.sleep(0.05)
    return False


def collect(folder: Path) -> dict:
    """Merges the final reports of the worker processes that wrote to ``folder``."""
    merged = {"count": 0, "first": 0.0, "last": 0.0, "samples": [], "processes": 0}
    for path in Path(folder).glob("*.json"):
        data = json.loads(path.read_text())
        merged["processes"] += 1
        if data["count"]:
            merged["first"] = min(merged["first"] or data["first"], data["first"])
            merged["last"] = max(merged["last"], data["last"])
        merged["count"] += data["count"]
        merged["samples"].extend(data["samples"])
    return merged
