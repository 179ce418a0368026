"""What the reliability scenarios share: the services with process control, and reading back
from the database and from Kafka what they did.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import dramatiq
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from sqlalchemy import func, select

from broker import PARTITION_KEY, KafkaBroker
from tasks.store import Payment, Store, Task, User
from tests.eventually import eventually
from tests.processes import group_members
from tests.system import System, call, procfile

#: The queues of the reference system; each has a main and a delay (``.DQ``) consumer group.
QUEUES = ("auth", "payments")

#: How often waits poll the database, Kafka or the processes (s).
POLL = 0.1


def rss_kib(pid: int) -> int | None:
    """A process's resident set size (``VmRSS``), in KiB; ``None`` once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class Services(System):
    """The Procfile's processes (:class:`tests.system.System`), plus what fault scenarios need.

    Parameters:
      kafka(str): The bootstrap address of the Kafka the system uses.
      tmp_path(Path): Where the database and the processes' logs go.
      env: Environment overrides for every process.
    """

    def __init__(self, kafka: str, tmp_path: Path, **env: str) -> None:
        super().__init__(kafka, tmp_path)
        self.kafka = kafka
        self.env.update(env)
        self.prefix = self.env["KAFKA_PREFIX"]
        self.store = Store(self.database_url)

    def launch(self, name: str) -> subprocess.Popen:
        """Starts one Procfile process again (a platform restarting a dyno), appending to its log."""
        with open(self.logs / f"{name}.log", "a") as log:
            self.processes[name] = subprocess.Popen(
                ["bash", "-c", f"exec {procfile(self.root)[name]}"],
                cwd=self.root,
                env={**self.env, "DYNO": f"{name}.1"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.processes[name]

    def members(self, name: str) -> list[int]:
        """The live processes of a Procfile process's group (its supervisor and worker processes)."""
        return group_members(self.processes[name].pid)

    def signal(self, name: str, signum: int) -> None:
        """Sends a signal to every process of a Procfile process's group, as a platform does."""
        os.killpg(self.processes[name].pid, signum)

    def wait_gone(self, *names: str, timeout: float) -> dict[str, tuple[int | None, float]]:
        """Waits until the given Procfile processes and every process of their groups have exited.

        Returns:
          Each one's exit status and the seconds from this call until its group was gone.
        """
        started = time.monotonic()
        gone: dict[str, tuple[int | None, float]] = {}

        def all_gone() -> bool:
            for name in names:
                if name not in gone and self.processes[name].poll() is not None and not self.members(name):
                    gone[name] = (self.processes[name].returncode, time.monotonic() - started)
            return len(gone) == len(names)

        def left() -> str:
            alive = {name: self.members(name) for name in names if name not in gone}
            return f"still alive: {alive}\n" + "\n".join(self.log(name) for name in alive)

        eventually(all_gone, timeout=timeout, what="the processes to exit after the signal", progress=left)
        return gone

    def rss(self) -> dict[str, int]:
        """The RSS, in KiB, of every process of the web, auth and payments groups, as ``name/pid``."""
        return {
            f"{name}/{pid}": kib
            for name in ("web", "auth", "payments")
            for pid in self.members(name)
            if (kib := rss_kib(pid)) is not None
        }

    def log_text(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def sign_up(self, name: str, email: str) -> dict:
        """Signs a user up over HTTP and returns the user once the task succeeded."""
        status, body, _ = call("POST", f"{self.base}/api/auth/sign-up", {"name": name, "email": email})
        assert status == 202, body
        task = self.wait_for(body["taskId"], "succeeded", "failed", "dead")
        assert task["status"] == "succeeded", task
        return task["result"]

    def enqueue_payments(self, user_id: int, keys: list[str], amount: str = "1.00") -> list[str]:
        """Puts ``process_payment`` messages straight into the payments topic, as the gateway would,
        one per idempotency key (also the partition key, so they spread over the partitions).

        Returns:
          The messages' ids (the tasks' ids).
        """
        broker = KafkaBroker(bootstrap_servers=self.kafka, prefix=self.prefix)
        broker.declare_queue("payments")
        messages = [
            dramatiq.Message(
                queue_name="payments",
                actor_name="process_payment",
                args=({"userId": user_id, "amount": amount, "currency": "EUR"}, key),
                kwargs={},
                options={PARTITION_KEY: key},
            )
            for key in keys
        ]
        try:
            for start in range(0, len(messages), 500):
                broker.enqueue_many(messages[start : start + 500])
        finally:
            broker.close()
        return [message.message_id for message in messages]

    def wait_until(self, what: str, done, progress, *, timeout: float, logs=("payments",)) -> None:
        """Polls ``done()`` until it holds; fails after ``timeout`` seconds saying what hung and how
        far it got (``progress()``), with the tails of the given logs."""

        def got() -> str:
            tails = "\n".join(f"--- {name} ---\n{self.log(name)}" for name in logs)
            return f"{progress()}\n{tails}"

        eventually(done, timeout=timeout, interval=POLL, what=f"hung: {what}", progress=got)

    def stop(self) -> None:
        """Stops every process (SIGKILLing stragglers) and releases the database."""
        try:
            super().stop()
        finally:
            for process in self.processes.values():
                if group_members(process.pid):
                    os.killpg(process.pid, signal.SIGKILL)
            self.store.engine.dispose()


class Stream:
    """Clients that send requests at a steady pace, each on a thread of its own, until stopped.

    Parameters:
      base(str): The gateway's base URL.
      request: ``request(n) -> (method, path, body, headers)`` for the n-th request.
      clients(int): How many requests may be in flight at once.
      rate(float): Requests per second in all; each client keeps its share on an absolute schedule.
    """

    def __init__(self, base: str, request, *, clients: int, rate: float) -> None:
        self.base, self.request, self.clients, self.interval = base, request, clients, clients / rate
        #: ``(n, sent_at, seconds, status, body, headers, error)`` of every request answered or failed.
        self.results: list[tuple] = []
        self._numbers = iter(range(10**9))
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def start(self) -> Stream:
        for thread in self._threads:
            thread.start()
        return self

    def _run(self, client: int) -> None:
        next_at = time.monotonic() + client * self.interval / self.clients
        while not self._stopping.is_set():
            self._stopping.wait(max(0.0, next_at - time.monotonic()))
            if self._stopping.is_set():
                return
            next_at = max(next_at + self.interval, time.monotonic() - self.interval)
            with self._lock:
                n = next(self._numbers)
            method, path, body, headers = self.request(n)
            sent_at = time.monotonic()
            try:
                status, answer, answer_headers = call(method, f"{self.base}{path}", body, headers)
                error = None
            except Exception as e:  # a refused connection or no answer within call()'s 30 s
                status, answer, answer_headers, error = None, None, {}, f"{type(e).__name__}: {e}"
            with self._lock:
                self.results.append((n, sent_at, time.monotonic() - sent_at, status, answer, answer_headers, error))

    def stop(self, timeout: float = 40) -> list[tuple]:
        """Stops sending, waits for the requests in flight, and returns every result."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout)
            assert not thread.is_alive(), f"hung: a client's request got no answer within {timeout}s of stopping"
        return sorted(self.results)


# The database ------------------------------------------------------------------------------------


def payment_counts(store: Store) -> Counter:
    """How many payment rows each idempotency key has (a payment without one: its task id)."""
    key = func.coalesce(Payment.idempotency_key, Payment.task_id)
    with store.engine.connect() as connection:
        rows = connection.execute(select(key, func.count()).group_by(key))
        return Counter(dict(rows.all()))


def task_statuses(store: Store, task_ids) -> Counter:
    """How many of the given tasks are in each status ("missing" for no row)."""
    wanted = set(task_ids)
    with store.engine.connect() as connection:
        found = dict(connection.execute(select(Task.id, Task.status)).all())
    return Counter(found.get(task_id, "missing") for task_id in wanted)


def user_creators(store: Store) -> Counter:
    """How many users each creating task has (a user remembers the task that created it)."""
    with store.engine.connect() as connection:
        return Counter(dict(connection.execute(select(User.created_by, func.count()).group_by(User.created_by)).all()))


# Kafka -------------------------------------------------------------------------------------------


def _admin(kafka: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka})


def topic_records(kafka: str, prefix: str) -> dict[str, int]:
    """The records each of a prefix's topics holds (end minus start offsets), by unprefixed name."""
    admin = _admin(kafka)
    metadata = admin.list_topics(timeout=30).topics
    partitions = [TopicPartition(t, p) for t in metadata if t.startswith(prefix) for p in metadata[t].partitions]
    if not partitions:
        return {}
    ends = admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions})
    starts = admin.list_offsets({tp: OffsetSpec.earliest() for tp in partitions})
    counts = Counter()
    for tp in partitions:
        counts[tp.topic[len(prefix) :]] += ends[tp].result(30).offset - starts[tp].result(30).offset
    return dict(counts)


def consumer_lag(kafka: str, prefix: str, queues=QUEUES) -> dict[str, int]:
    """Each consumer group's lag: records of its topics past its committed offsets.

    The groups are each queue's (on the queue's topic) and its delay queue's (on its ``.DQ.*``
    tier topics), with the prefix, as :class:`broker.KafkaBroker` names them.
    """
    from broker.reading import group_offsets

    broker = KafkaBroker(bootstrap_servers=kafka, prefix=prefix)
    try:
        metadata = broker.admin.list_topics(timeout=30).topics
        lag = {}
        for queue in queues:
            groups = {
                queue: [t for t in metadata if t == prefix + queue],
                f"{queue}.DQ": [t for t in metadata if t.startswith(f"{prefix}{queue}.DQ.")],
            }
            for group, topics in groups.items():
                lag[group] = sum(p.behind for p in group_offsets(broker, prefix + group, topics))
        return lag
    finally:
        broker.close()
