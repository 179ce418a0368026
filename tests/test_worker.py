"""`kafka-tasks worker` in real processes on the real Kafka: crashes, SIGTERM, rebalances.

Each test runs the command in a session of its own, as a platform like Heroku runs a dyno, so that
``os.killpg`` signals the supervising process and its worker process together.  The actor of
``tests.workerapp`` appends ``<n> <pid>`` to a record file for every message it runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dramatiq
import pytest
from confluent_kafka.admin import AdminClient

from broker import KafkaBroker
from tests.eventually import eventually
from tests.processes import children_of, group_members

#: The repository root, where ``python -m tasks.cli`` and ``tests.workerapp`` import from.
REPO_ROOT = Path(__file__).resolve().parent.parent

#: The generous bound on any wait for workers to make progress (s).
DEADLINE = 90

#: How often the record file and processes are polled (s).
POLL = 0.01


# Processes ----------------------------------------------------------------------------------


class Worker:
    """One ``kafka-tasks worker tests.workerapp --processes 1`` command, in a session of its own."""

    def __init__(self, name: str, *, kafka: str, queue_name: str, tmp_path: Path, sleep_ms: int, **env: str) -> None:
        self.name = name
        self.log_path = tmp_path / f"worker-{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - the process writes to it until cleanup() closes it
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "TEST_QUEUE": queue_name,
            "RECORD_FILE": str(tmp_path / "records"),
            "TASK_SLEEP_MS": str(sleep_ms),
            **env,
        }
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tasks.cli", "worker", "tests.workerapp", "--processes", "1", "--threads", "8"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def killpg(self, sig: int) -> None:
        """Signals every process of the command's group, as the platform does."""
        os.killpg(self.pid, sig)

    def child(self, timeout: float = DEADLINE) -> int:
        """Waits for the command's (one) worker process and returns its pid."""

        def started() -> int | None:
            children = children_of(self.pid)
            if not children and self.proc.poll() is not None:
                pytest.fail(
                    f"worker {self.name} exited with {self.proc.returncode} before starting a worker "
                    f"process\n{self.log_tail()}",
                    pytrace=False,
                )
            return children[0] if children else None

        return eventually(
            started, timeout=timeout, interval=POLL, what=f"worker {self.name}'s worker process", progress=self.log_tail
        )

    def wait(self, timeout: float) -> int | None:
        """Waits for the command to exit; returns its status, or ``None`` if it is still running."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait_group_gone(self, timeout: float = 30) -> None:
        """Waits until no process of the command's group is left (after SIGKILL, say)."""
        self.wait(timeout)
        eventually(
            lambda: not group_members(self.pid),
            timeout=timeout,
            interval=POLL,
            what=f"every process of worker {self.name} to exit",
            progress=lambda: f"{group_members(self.pid)} alive\n{self.log_tail()}",
        )

    def stop(self, timeout: float = 30) -> int | None:
        """Stops the command with one SIGTERM to its group and returns its exit status."""
        if self.proc.poll() is None:
            self.killpg(signal.SIGTERM)
        return self.wait(timeout)

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- tail of worker {self.name}'s log ({self.log_path}) ---\n{tail}\n--- end ---"

    def cleanup(self) -> None:
        """SIGKILLs whatever is left of the command's group, and closes the log."""
        try:
            if self.proc.poll() is None or group_members(self.pid):
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(30)
        finally:
            self._log.close()


def logs(workers) -> str:
    return "\n".join(w.log_tail() for w in workers)


# Records ------------------------------------------------------------------------------------


def read_records(path: Path) -> list[tuple[int, int]]:
    """The complete ``(n, pid)`` lines of the record file so far."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [(int(n), int(pid)) for n, pid in (line.split() for line in text.split("\n")[:-1])]


def wait_for_records(path: Path, what: str, done, *, workers, timeout: float = DEADLINE) -> list[tuple[int, int]]:
    """Polls the record file until ``done(records)`` holds.

    Fails, with how far it got and the workers' logs, after ``timeout`` seconds or as soon as one
    of ``workers`` exits.
    """

    def progress() -> str:
        records = read_records(path)
        return f"{len(records)} lines, {len({n for n, _ in records})} distinct n\n{logs(workers)}"

    def reached() -> tuple[list[tuple[int, int]]] | None:
        records = read_records(path)
        if done(records):
            return (records,)
        exited = [w for w in workers if w.proc.poll() is not None]
        if exited:
            pytest.fail(
                f"worker {exited[0].name} exited with {exited[0].proc.returncode} while waiting for {what} "
                f"(got {progress()})",
                pytrace=False,
            )
        return None

    return eventually(reached, timeout=timeout, interval=POLL, what=what, progress=progress)[0]


def at_least(count: int):
    return lambda records: len({n for n, _ in records}) >= count


def duplicates(records) -> dict[int, int]:
    """The n recorded more than once, with how many times."""
    return {n: c for n, c in Counter(n for n, _ in records).items() if c > 1}


# Fixtures -----------------------------------------------------------------------------------


def _record(n):  # Declared on the test's broker only to enqueue; tests.workerapp runs it.
    raise AssertionError("runs in the worker processes only")


@pytest.fixture
def record_actor(kafka, queue_name):
    """The ``record`` actor of ``tests.workerapp``, on a broker of the test process."""
    broker = KafkaBroker(bootstrap_servers=kafka, partitions=4)
    try:
        yield dramatiq.actor(_record, actor_name="record", queue_name=queue_name, broker=broker)
    finally:
        broker.close()


@pytest.fixture
def workers(kafka, queue_name, tmp_path):
    """Starts workers by name; every one is stopped (SIGKILLed if need be) after the test."""
    started: list[Worker] = []

    def start(name: str, sleep_ms: int) -> Worker:
        worker = Worker(name, kafka=kafka, queue_name=queue_name, tmp_path=tmp_path, sleep_ms=sleep_ms)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.cleanup()


def enqueue(actor, numbers) -> None:
    """Enqueues ``record(n)`` for each n, keyed by n.

    Without a key, the producer's sticky partitioner can put a whole batch on one or two
    partitions; keyed by n, every batch spreads over all four, so every worker gets a share.
    """
    actor.broker.enqueue_many([actor.message_with_options(args=(n,), partition_key=n) for n in numbers])


def group_assignment(admin: AdminClient, group: str) -> list[list[int]]:
    """The partitions each member of a consumer group is assigned, as the coordinator says."""
    description = admin.describe_consumer_groups([group])[group].result(10)
    return [sorted(tp.partition for tp in member.assignment.topic_partitions) for member in description.members]


# Tests --------------------------------------------------------------------------------------


def test_sigkill_mid_batch_loses_nothing(record_actor, workers, tmp_path):
    records_path = tmp_path / "records"
    everything = set(range(600))
    enqueue(record_actor, range(600))
    first = workers("first", sleep_ms=5)

    recorded = wait_for_records(
        records_path, ">= 100 messages recorded by the first worker", at_least(100), workers=[first]
    )
    first.killpg(signal.SIGKILL)
    first.wait_group_gone()
    ran_before = {n for n, _ in read_records(records_path)}
    # What the first worker ran but had not committed is what may run again, and nothing else
    from tests.test_broker import committed

    broker = record_actor.broker
    uncommitted = len(ran_before) - sum(
        committed(broker, broker.settings.group(record_actor.queue_name), record_actor.queue_name).values()
    )
    print(
        f"\ndistinct recorded when SIGKILLed: >= {len({n for n, _ in recorded})} (after exit: {len(ran_before)}, "
        f"{uncommitted} of them not committed)"
    )

    second = workers("second", sleep_ms=5)
    wait_for_records(
        records_path,
        "all 600 messages recorded after the restart",
        lambda records: {n for n, _ in records} >= everything,
        workers=[second],
    )
    second.stop()
    records = read_records(records_path)

    assert {n for n, _ in records} == everything, logs([first, second])
    d = len(records) - len({n for n, _ in records})
    print(f"duplicates after SIGKILL: {d}")
    twice = {n for n, count in Counter(n for n, _ in records).items() if count > 1}
    assert twice <= ran_before, f"ran twice without having run before the kill: {sorted(twice - ran_before)[:20]}"
    assert d <= uncommitted, (
        f"{d} duplicates, more than the {uncommitted} run and not committed\n{logs([first, second])}"
    )


def test_sigterm_to_the_process_group_exits_cleanly_and_loses_nothing(record_actor, workers, tmp_path):
    records_path = tmp_path / "records"
    everything = set(range(300))
    enqueue(record_actor, range(300))
    first = workers("first", sleep_ms=50)

    wait_for_records(records_path, ">= 30 messages recorded by the first worker", at_least(30), workers=[first])
    signalled = time.monotonic()
    first.killpg(signal.SIGTERM)
    status = first.wait(25)
    took = time.monotonic() - signalled
    at_stop = read_records(records_path)
    print(f"\nSIGTERM to exit: {took:.2f}s, status {status}, {len(at_stop)} recorded before the restart")
    assert status is not None, f"worker still running 25 s after SIGTERM\n{first.log_tail()}"
    assert status == 0, f"worker exited with {status} after SIGTERM\n{first.log_tail()}"

    second = workers("second", sleep_ms=50)
    wait_for_records(
        records_path,
        "all 300 messages recorded after the restart",
        lambda records: {n for n, _ in records} >= everything,
        workers=[second],
    )
    second.stop()
    records = read_records(records_path)

    assert {n for n, _ in records} == everything, logs([first, second])
    doubles = duplicates(records)
    assert not doubles, (
        f"{len(doubles)} messages ran twice after a clean SIGTERM stop: {sorted(doubles)[:50]}\n{logs([first, second])}"
    )


def test_two_workers_share_the_partitions_and_a_rebalance_loses_nothing(
    kafka, queue_name, record_actor, workers, tmp_path
):
    records_path = tmp_path / "records"
    everything = set(range(800))
    batches = [range(i, i + 200) for i in range(0, 800, 200)]
    a = workers("A", sleep_ms=10)
    enqueue(record_actor, batches[0])
    b = workers("B", sleep_ms=10)
    a_pid, b_pid = a.child(), b.child()

    # Once B has joined the group and both hold partitions, B gets its share of the next batch.
    admin, group = AdminClient({"bootstrap.servers": kafka}), record_actor.broker.settings.group(queue_name)

    def both_hold_partitions() -> bool:
        if a.proc.poll() is not None or b.proc.poll() is not None:
            pytest.fail(f"a worker exited before the group had two members\n{logs([a, b])}", pytrace=False)
        return sorted(len(p) > 0 for p in group_assignment(admin, group)) == [True, True]

    eventually(
        both_hold_partitions,
        timeout=DEADLINE,
        interval=0.1,
        what="two members with partitions in the group",
        progress=lambda: f"{group_assignment(admin, group)}\n{logs([a, b])}",
    )
    enqueue(record_actor, batches[1])
    enqueue(record_actor, batches[2])
    wait_for_records(
        records_path,
        f"worker B (pid {b_pid}) to record a message",
        lambda records: any(pid == b_pid for _, pid in records),
        workers=[a, b],
    )

    # A is stopped while its partitions still hold messages: B takes them over.
    enqueue(record_actor, batches[3])
    a.killpg(signal.SIGTERM)
    a_status = a.wait(30)
    wait_for_records(
        records_path, "all 800 messages recorded", lambda records: {n for n, _ in records} >= everything, workers=[b]
    )
    b.stop()
    records = read_records(records_path)

    assert a_status == 0, f"worker A exited with {a_status} after SIGTERM\n{a.log_tail()}"
    assert {n for n, _ in records} == everything, logs([a, b])
    by_pid = Counter(pid for _, pid in records)
    assert len(by_pid) >= 2, f"only {dict(by_pid)} recorded messages\n{logs([a, b])}"
    print(
        f"\nrecords by pid: A {by_pid[a_pid]}, B {by_pid[b_pid]}; "
        f"duplicates after the rebalance: {len(records) - len(everything)}"
    )


def test_worker_command_exits_nonzero_when_a_worker_process_dies(workers):
    worker = workers("only", sleep_ms=0)
    child = worker.child()

    os.kill(child, signal.SIGKILL)
    status = worker.wait(30)

    assert status is not None, f"the command is still running 30 s after its worker process died\n{worker.log_tail()}"
    assert status != 0, f"the command exited with 0 after its worker process died\n{worker.log_tail()}"
