"""A ``celery worker`` process of :mod:`benchmarks.celeryapp` on a fresh queue, and its sender."""

from __future__ import annotations

import time
from pathlib import Path

from . import procs
from .context import Context
from .probe import collect, progress, wait_progress

#: Display names of the Celery baselines, by key.
NAMES = {
    "celery": "Celery 5 on Kafka (polling_interval 0.01 s)",
    "celery-defaults": "Celery 5 on Kafka (defaults)",
    "celery-redis": "Celery 5 on Redis",
    "celery-rabbitmq": "Celery 5 on RabbitMQ",
}

#: The server each baseline needs besides Kafka.
SERVERS = {"celery-redis": "redis", "celery-rabbitmq": "rabbitmq"}


def broker_url(ctx: Context, key: str) -> str:
    """The Celery broker URL of a baseline."""
    if key == "celery-redis":
        return ctx.urls["redis"]
    if key == "celery-rabbitmq":
        return ctx.urls["rabbitmq"].replace("amqp://", "pyamqp://", 1)
    return f"confluentkafka://{ctx.bootstrap_servers.split(',')[0]}"


def variant(key: str) -> str:
    return "defaults" if key == "celery-defaults" else "tuned"


class CeleryWorker:
    """``celery -A benchmarks.celeryapp worker -P threads -c <threads>`` on a fresh queue, and an
    app in this process that sends to it.

    Raises:
      RuntimeError: If Celery is not installed.
    """

    def __init__(self, ctx: Context, key: str, *, threads: int = 8, name: str = "celery") -> None:
        try:
            from .celeryapp import make_app
        except ImportError as e:
            raise RuntimeError(f"Celery is not installed ({e}); pip install -e '.[bench]'") from None
        self.url = broker_url(ctx, key)
        self.app = make_app(self.url, variant(key))
        self.queue = ctx.queue(name)
        self.probe_dir = Path(ctx.workdir) / f"probe-{self.queue}"
        self.probe_dir.mkdir(parents=True)
        self.log = Path(ctx.workdir) / "logs" / f"celery-{self.queue}.log"
        command = [ctx.bin("celery"), "-A", "benchmarks.celeryapp", "worker", "-P", "threads", "-c", str(threads)]
        command += ["-Q", self.queue, "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "WARNING"]
        self.command = command
        self.env = ctx.env(
            BENCH_CELERY_BROKER=self.url, BENCH_CELERY_VARIANT=variant(key), BENCH_PROBE_DIR=self.probe_dir
        )
        self.process = None

    def start(self) -> None:
        self.process = procs.start(self.command, self.env, self.log)

    def send(self, task: str, *args) -> None:
        self.app.send_task(task, args=args, queue=self.queue)

    def progress(self) -> int:
        return progress(self.probe_dir)

    def wait(self, count: int, timeout: float) -> bool:
        return wait_progress(self.probe_dir, count, timeout)

    def warm_up(self, timeout: float = 90) -> None:
        """Sends one ``warm`` task and waits until the worker ran it."""
        self.send("bench.warm")
        if not self.wait(1, timeout):
            raise RuntimeError(f"Celery ran no task: {self.tail()}")

    def tail(self) -> str:
        return procs.tail(self.log, 3)

    def stop(self) -> dict:
        """Stops the worker (SIGTERM, as a platform would) and returns its probe's merged report."""
        stop_requested = time.time()
        if self.process is not None:
            procs.stop(self.process, timeout=20)
        result = collect(self.probe_dir)
        if not result["processes"]:
            raise RuntimeError(f"the Celery worker wrote no report; {self.tail()}")
        result["stop requested"] = stop_requested
        return result

    def __enter__(self) -> CeleryWorker:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None and procs.alive(self.process):
            procs.stop(self.process, timeout=20)
