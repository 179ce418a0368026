"""Warming a freshly started Kafka up before the scenarios, so that none depends on what ran before it.

A new Kafka JVM interprets its code until its JIT compiler has seen it run.  Under the HTTP
scenario's load, a cold broker spent ~1 ms of CPU per produce request in its first 30 s and
~0.25 ms after two minutes, and the gateway, sharing the two cores, served half as many
requests.  A scenario run first, or alone (``--only``), measured that start-up instead of the
system.  So the bench first loads the broker the way the scenarios will: confirmed single sends
from several threads through ``KafkaBroker`` (the gateway's shape) to a worker process that
consumes and commits them (a worker's).
"""

from __future__ import annotations

import time

from . import procs
from .context import Context
from .threads import in_threads
from .workers import WorkerProcess

#: Threads that send.
SENDERS = 8


def run(ctx: Context, seconds: float, *, window: float = 15.0) -> list[tuple[int, float | None]]:
    """Loads Kafka for ``seconds``.

    Returns:
      Per ``window`` seconds: the messages sent, and the local broker's CPU per message in ms
      (None when Kafka is not local): how far it has warmed up.
    """
    windows: list[tuple[int, float | None]] = []
    sent = [0] * SENDERS
    with WorkerProcess(ctx, "kafka", name="warmup") as worker:
        worker.warm_up()
        noop = worker.actors["noop"]
        deadline = time.monotonic() + seconds

        def send(i: int) -> None:
            while time.monotonic() < deadline:
                noop.send(i)
                sent[i] += 1

        def watch() -> None:
            while time.monotonic() + window <= deadline:
                count, cpu = sum(sent), procs.cpu_seconds(ctx.kafka_pid) if ctx.kafka_pid else None
                time.sleep(window)
                messages = sum(sent) - count
                used = procs.cpu_seconds(ctx.kafka_pid) - cpu if cpu is not None else None
                windows.append((messages, used * 1000 / messages if used is not None and messages else None))

        in_threads(lambda i: send(i) if i < SENDERS else watch(), SENDERS + 1)
    return windows
