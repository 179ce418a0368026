"""What every scenario is given: where the servers are, how many runs, and how big a run is."""

from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

#: The repository root: worker processes run from here so that ``benchmarks`` and ``tasks`` import.
ROOT = Path(__file__).resolve().parent.parent

#: How the names of the benchmarks' topics and groups begin.
PREFIX = "bench-"


@dataclass
class Context:
    """The settings of one benchmark session.

    Parameters:
      bootstrap_servers(str): The Kafka cluster.
      workdir(Path): A temporary folder for probe files, databases and logs.
      runs(int): How many times each figure is measured.
      smoke(bool): Run each scenario for about a second, for the smoke test: sizes shrink.
      urls(dict): ``redis`` and ``rabbitmq`` URLs of the baselines' servers, where they run.
      errors(dict): Why a baseline's server is not running.
      kafka_pid(int): The local Kafka broker's process, whose CPU time scenarios may account for;
        None when the cluster is elsewhere.
    """

    bootstrap_servers: str
    workdir: Path
    runs: int = 3
    smoke: bool = False
    urls: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    kafka_pid: int | None = None

    def size(self, full: int, smoke: int) -> int:
        """Returns a message count (or duration) for this mode."""
        return smoke if self.smoke else full

    @property
    def run_count(self) -> int:
        return 1 if self.smoke else self.runs

    def prefix(self) -> str:
        """Returns a fresh ``KAFKA_PREFIX``: every topic and group of a run is new."""
        return f"{PREFIX}{uuid.uuid4().hex[:10]}."

    def delete_topics(self) -> int:
        """Deletes the topics earlier runs made (their names start with ``bench-``).

        Kafka works for every partition it has, used or not: a local broker idling with ~1,400
        partitions used 22 % of a core, against 4 % with a few dozen.  Left in place, the topics of
        earlier runs would tax later ones, and each figure would depend on what ran before it.

        Returns:
          How many topics were deleted.
        """
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        topics = [name for name in admin.list_topics(timeout=30).topics if name.startswith(PREFIX)]
        if topics:
            for future in admin.delete_topics(topics, operation_timeout=60).values():
                future.result()
        return len(topics)

    def queue(self, name: str) -> str:
        """Returns a queue name no earlier run used (Redis and RabbitMQ have no prefix)."""
        return f"{name}_{uuid.uuid4().hex[:8]}"

    def missing(self, service: str) -> str | None:
        """Returns why ``redis`` or ``rabbitmq`` is unavailable, or None when it runs."""
        if service in self.urls:
            return None
        return self.errors.get(service, f"{service} is not running")

    def env(self, **extra) -> dict:
        """Returns the environment of a child process: this one's, the cluster, and ``extra``."""
        env = {key: value for key, value in os.environ.items() if not key.startswith(("KAFKA_", "BENCH_"))}
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if "redis" in self.urls:
            env["BENCH_REDIS_URL"] = self.urls["redis"]
        if "rabbitmq" in self.urls:
            env["BENCH_RABBITMQ_URL"] = self.urls["rabbitmq"]
        env.update({key: str(value) for key, value in extra.items()})
        return env

    @property
    def python(self) -> str:
        return sys.executable

    def bin(self, name: str) -> str:
        """Returns the path of a console script installed next to this Python (gunicorn, celery)."""
        return str(Path(sys.executable).parent / name)

    def measure_in_turn(self, measures: dict, *, subject, servers: dict | None = None) -> tuple[dict, dict]:
        """Measures every system once per run, in turn, so that all of them meet the same machine.

        Parameters:
          measures(dict): Each system's key and a function that measures it once.
          subject: The key of the system the scenario is about: its failure propagates.
          servers(dict): The server (``redis``, ``rabbitmq``) a system needs, by key.

        Returns:
          The results of each system's runs, and why a system has none or fewer (a missing
          server, or its error), both by key.
        """
        results: dict = {}
        notes: dict = {}
        for _ in range(self.run_count):
            for key, measure in measures.items():
                missing = self.missing(servers[key]) if servers and key in servers else None
                if missing:
                    notes[key] = missing
                    continue
                self.delete_topics()
                try:
                    results.setdefault(key, []).append(measure())
                except Exception as e:
                    if key == subject:
                        raise
                    notes[key] = f"failed: {type(e).__name__}: {e}"
        return results, notes
