"""A worker process of :mod:`benchmarks.workerapp` on a fresh queue, and a sender that matches it.

Both sides declare the same actors (``noop``, ``stamp``, ``late``, ``warm``) on the same queue, so
the sender's messages are the worker's.  The worker reports to its own probe folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import dramatiq

from . import procs
from .brokers import join, make_broker
from .context import Context
from .probe import collect, progress, wait_progress

#: The actors of benchmarks.workerapp, by name.
ACTORS = ("noop", "stamp", "late", "warm")

#: How long a worker may take to consume its first messages (s).
START_TIMEOUT = 90


def _placeholder(*args):
    raise RuntimeError("benchmark actors run in the worker process")


class WorkerProcess:
    """``python -m broker.worker benchmarks.workerapp`` (or ``kafka-tasks worker -p N``) on a fresh
    queue, with a broker of the same kind in this process to send to it.

    Parameters:
      kind(str): ``kafka``, ``redis`` or ``rabbitmq``.
      processes(int): Worker processes; more than one runs ``kafka-tasks worker -p N``.
      threads(int): Worker threads per process.
      partitions(int): Partitions of the queue's topics (Kafka).
    """

    def __init__(
        self,
        ctx: Context,
        kind: str,
        *,
        processes: int = 1,
        threads: int = 8,
        partitions: int = 4,
        name: str = "bench",
        consumer_config: dict | None = None,
        share: bool = False,
    ) -> None:
        self.ctx = ctx
        self.kind = kind
        self.queue = ctx.queue(name)
        self.prefix = ctx.prefix()
        self.probe_dir = Path(ctx.workdir) / f"probe-{self.queue}"
        self.probe_dir.mkdir(parents=True)
        self.log = Path(ctx.workdir) / "logs" / f"worker-{self.queue}.log"
        self.broker = make_broker(
            kind,
            bootstrap_servers=ctx.bootstrap_servers,
            prefix=self.prefix,
            partitions=partitions,
            redis_url=ctx.urls.get("redis"),
            rabbitmq_url=ctx.urls.get("rabbitmq"),
            confirm_delivery=True,
        )
        self.actors = {
            name: dramatiq.actor(
                _placeholder, actor_name=name, broker=self.broker, queue_name=self.queue, max_retries=0
            )
            for name in ACTORS
        }
        if kind == "kafka":
            self.broker.ensure_topics()
        env = ctx.env(
            BENCH_BROKER=kind,
            BENCH_QUEUE=self.queue,
            BENCH_PARTITIONS=partitions,
            BENCH_PROBE_DIR=self.probe_dir,
            KAFKA_PREFIX=self.prefix,
        )
        if consumer_config:
            env["BENCH_CONSUMER_CONFIG"] = json.dumps(consumer_config)
        if share:
            env["BENCH_SHARE"] = "1"
        self.processes = processes
        if processes == 1:
            command = [ctx.python, "-m", "broker.worker", "benchmarks.workerapp", "--threads", str(threads)]
        else:
            command = [
                ctx.bin("kafka-tasks"),
                "worker",
                "benchmarks.workerapp",
                "--processes",
                str(processes),
                "--threads",
                str(threads),
            ]
        self.process = procs.start(command, env, self.log)

    def warm_up(self, messages: int = 10) -> None:
        """Waits until the worker consumes: sends uncounted messages and waits for the queue to drain."""
        for _ in range(messages):
            self.actors["warm"].send()
        try:
            join(self.broker, self.queue, START_TIMEOUT * 1000)
        except Exception as e:
            raise RuntimeError(
                f"the worker did not start consuming ({type(e).__name__}); {procs.tail(self.log, 5)}"
            ) from None
        if not procs.alive(self.process):
            raise RuntimeError(f"the worker exited: {procs.tail(self.log, 5)}")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Waits until every worker process says it is ready, and the share group has had a few
        heartbeats to assign them (a share group's members cannot be asked for)."""
        deadline = time.monotonic() + timeout
        while procs.tail(self.log, 1000).count("Worker process is ready for action.") < self.processes:
            if time.monotonic() > deadline or not procs.alive(self.process):
                raise RuntimeError(f"the workers did not start: {procs.tail(self.log, 5)}")
            time.sleep(0.1)
        time.sleep(3)

    def progress(self) -> int:
        return progress(self.probe_dir)

    def wait(self, count: int, timeout: float) -> bool:
        """Waits until the worker has run ``count`` counted messages."""
        return wait_progress(self.probe_dir, count, timeout)

    @property
    def pids(self) -> list[int]:
        """The pids of the processes that run actors."""
        return [self.process.pid] if self.process.args[1] == "-m" else procs.children(self.process.pid)

    def stop(self) -> dict:
        """Stops the worker (one SIGTERM, as a platform sends it) and returns its probe report."""
        procs.stop(self.process, timeout=40)
        self.broker.close()
        time.sleep(0.05)
        return collect(self.probe_dir)

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc) -> None:
        if procs.alive(self.process):
            self.stop()
