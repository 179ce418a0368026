"""What a worker process says about itself every few seconds, and what the reports add up to.

A :class:`WorkerReport` travels through the ops topic (``kafka-tasks.ops``): who the process is
(``DYNO`` on Heroku, else host and pid), its queues and threads, what it runs now, its counters per
queue and actor (Dramatiq's Prometheus middleware's: processed, errors, retries, rejects, and a
duration histogram), the lag of the partitions it owns, the queues it has paused, and its version.
Counters only grow for the life of a process; a process starts from zero.

:class:`Fleet` keeps the reports of the last hour and answers what the dashboard, ``/metrics`` and
``kafka-tasks status`` show: live and gone processes, and per queue the throughput and the lag over
time.  Pure logic: reports and times are handed in.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field

#: Dramatiq's Prometheus buckets for message durations (ms); the last is +Inf.
DURATION_BUCKETS_MS = (5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000, 30000, 60000, 600000)

#: How often a worker reports (s).
REPORT_INTERVAL = 5.0

#: After how long without a report a process counts as gone (s): three reports missed.
GONE_AFTER = 3 * REPORT_INTERVAL

#: How long the fleet remembers reports (s): the dashboard's plots show the last hour.
HISTORY = 3600.0


@dataclass
class ActorCounters:
    """A process's counters for one actor of one queue, since it started.

    Parameters:
      processed(int): Messages it ran (succeeded or not).
      errors(int): Runs that raised.
      retries(int): Retries it sent.
      rejects(int): Messages it dead-lettered.
      buckets(list[int]): Runs per duration bucket (:data:`DURATION_BUCKETS_MS`, then +Inf), not cumulative.
      duration_ms(float): The sum of the runs' durations.
    """

    processed: int = 0
    errors: int = 0
    retries: int = 0
    rejects: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS_MS) + 1))
    duration_ms: float = 0.0

    def observe(self, duration_ms: float) -> None:
        """Counts one run of the given duration."""
        self.processed += 1
        self.duration_ms += duration_ms
        for index, bound in enumerate(DURATION_BUCKETS_MS):
            if duration_ms <= bound:
                self.buckets[index] += 1
                return
        self.buckets[-1] += 1


@dataclass
class InFlight:
    """A message a process is running: its id, actor, queue, and since when (epoch ms)."""

    message_id: str
    actor: str
    queue: str
    started_ms: int


@dataclass
class WorkerReport:
    """One report of one worker process.

    Parameters:
      worker(str): The process's id: ``<DYNO or host>:<pid>``.
      dyno(str|None): Heroku's ``DYNO`` (``payments.1``), if set.
      host(str): The host name.
      pid(int): The process id.
      version(str): The kafka-tasks version it runs.
      started_ms(int): When it started (epoch ms).
      reported_ms(int): When it wrote this report (epoch ms).
      queues(list[str]): The queues it consumes.
      threads(int): Its worker threads.
      in_flight(list[InFlight]): What it runs now.
      counters(dict): ``{"queue/actor": ActorCounters}``.
      lag(dict): ``{queue: {partition: messages behind}}`` of the partitions it owns.
      paused(list[str]): The queues it has stopped fetching from.
      stopping(bool): Its last report: it is shutting down.
    """

    worker: str
    dyno: str | None
    host: str
    pid: int
    version: str
    started_ms: int
    reported_ms: int
    queues: list[str]
    threads: int
    in_flight: list[InFlight] = field(default_factory=list)
    counters: dict[str, ActorCounters] = field(default_factory=dict)
    lag: dict[str, dict[int, int]] = field(default_factory=dict)
    paused: list[str] = field(default_factory=list)
    stopping: bool = False

    @property
    def busy(self) -> int:
        """Threads running a message."""
        return len(self.in_flight)

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes) -> WorkerReport:
        """Raises ``ValueError``, ``KeyError`` or ``TypeError`` for a record that is no report."""
        fields = json.loads(value)
        fields["in_flight"] = [InFlight(**item) for item in fields.get("in_flight", [])]
        fields["counters"] = {key: ActorCounters(**item) for key, item in fields.get("counters", {}).items()}
        fields["lag"] = {queue: {int(p): int(n) for p, n in parts.items()} for queue, parts in fields["lag"].items()}
        return cls(**fields)

    def processed_by_queue(self) -> dict[str, int]:
        """Messages processed since start, per queue."""
        totals: dict[str, int] = defaultdict(int)
        for key, counters in self.counters.items():
            totals[key.partition("/")[0]] += counters.processed
        return dict(totals)


def counter_key(queue: str, actor: str) -> str:
    """The key of a queue's actor in :attr:`WorkerReport.counters`."""
    return f"{queue}/{actor}"


class Fleet:
    """The reports of the last hour, and what they add up to.

    Parameters:
      history(float): How long reports are kept (s).
      gone_after(float): After how long without a report a process counts as gone (s).
    """

    def __init__(self, *, history: float = HISTORY, gone_after: float = GONE_AFTER) -> None:
        self.history = history
        self.gone_after = gone_after
        #: worker -> its reports, oldest first
        self._reports: dict[str, list[WorkerReport]] = defaultdict(list)

    def add(self, report: WorkerReport) -> None:
        """Keeps a report (reports of one process arrive in order; an older one is ignored)."""
        reports = self._reports[report.worker]
        if reports and reports[-1].reported_ms >= report.reported_ms:
            return
        reports.append(report)

    def forget_before(self, now_ms: int) -> None:
        """Drops reports older than the history."""
        oldest = now_ms - self.history * 1000
        for worker in list(self._reports):
            kept = [r for r in self._reports[worker] if r.reported_ms >= oldest]
            if kept:
                self._reports[worker] = kept
            else:
                del self._reports[worker]

    def latest(self) -> list[WorkerReport]:
        """Each process's last report, by worker id."""
        return [reports[-1] for _, reports in sorted(self._reports.items())]

    def is_live(self, report: WorkerReport, now_ms: int) -> bool:
        """Whether a process still runs: it reported lately and did not say it stopped."""
        return not report.stopping and now_ms - report.reported_ms <= self.gone_after * 1000

    def live(self, now_ms: int) -> list[WorkerReport]:
        return [r for r in self.latest() if self.is_live(r, now_ms)]

    def gone(self, now_ms: int) -> list[WorkerReport]:
        return [r for r in self.latest() if not self.is_live(r, now_ms)]

    def throughput(self, queue: str, now_ms: int, *, step: float = 30.0) -> list[tuple[float, float | None]]:
        """Messages processed per second in ``queue``, over the history, in ``step``-second bins,
        summed over processes: ``[(bin start, epoch s), rate or None when no process reported)]``."""
        bins: dict[int, float] = defaultdict(float)
        seen: set[int] = set()
        for reports in self._reports.values():
            for before, after in itertools.pairwise(reports):
                seconds = (after.reported_ms - before.reported_ms) / 1000
                if seconds <= 0:
                    continue
                done = after.processed_by_queue().get(queue, 0) - before.processed_by_queue().get(queue, 0)
                index = int(after.reported_ms / 1000 // step)
                seen.add(index)
                bins[index] += max(0, done) / seconds * (seconds / step if seconds < step else 1)
        return self._series(bins, seen, now_ms, step)

    def lag(self, queue: str, now_ms: int, *, step: float = 30.0) -> list[tuple[float, float | None]]:
        """Messages waiting in ``queue`` as the processes that own its partitions saw them, over the
        history, in ``step``-second bins (each process's last report in a bin, summed)."""
        last_in_bin: dict[tuple[int, str], int] = {}
        for worker, reports in self._reports.items():
            for report in reports:
                if queue in report.lag:
                    last_in_bin[(int(report.reported_ms / 1000 // step), worker)] = sum(report.lag[queue].values())
        bins: dict[int, float] = defaultdict(float)
        for (index, _), waiting in last_in_bin.items():
            bins[index] += waiting
        return self._series(bins, {index for index, _ in last_in_bin}, now_ms, step)

    def _series(self, bins: dict[int, float], seen: set[int], now_ms: int, step: float):
        last = int(now_ms / 1000 // step)
        first = last - int(self.history // step) + 1
        return [(index * step, bins[index] if index in seen else None) for index in range(first, last + 1)]


__all__ = [
    "DURATION_BUCKETS_MS",
    "GONE_AFTER",
    "REPORT_INTERVAL",
    "ActorCounters",
    "Fleet",
    "InFlight",
    "WorkerReport",
    "counter_key",
]
