"""No-op actor throughput of one worker process, on KafkaBroker and on Dramatiq's StubBroker.

Run: ``python benchmarks/worker_throughput.py [--messages N] [--threads N] [--runs N]`` with
``KAFKA_BOOTSTRAP_SERVERS`` pointing at a broker (``make kafka`` starts one).  Prints a table of
tasks/s: median, min and max over the runs, and the Kafka/Stub ratio measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import dramatiq
from dramatiq.brokers.stub import StubBroker

from broker import KafkaBroker


def measure(broker, messages: int, threads: int) -> float:
    queue_name = f"bench_{uuid.uuid4().hex[:8]}"

    @dramatiq.actor(queue_name=queue_name, broker=broker, max_retries=0)
    def noop(n):
        pass

    batch = [noop.message(n) for n in range(messages)]
    if isinstance(broker, KafkaBroker):
        for start in range(0, messages, 5_000):
            broker.enqueue_many(batch[start:start + 5_000])
    else:
        for message in batch:
            broker.enqueue(message)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    started = time.perf_counter()
    worker.start()
    broker.join(queue_name, timeout=600_000)
    elapsed = time.perf_counter() - started
    worker.stop()
    return messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = {"StubBroker": [], "KafkaBroker": []}
    for _ in range(args.runs):
        stub = StubBroker()
        stub.emit_after("process_boot")
        results["StubBroker"].append(measure(stub, args.messages, args.threads))
        kafka = KafkaBroker(commit_interval_ms=100)
        results["KafkaBroker"].append(measure(kafka, args.messages, args.threads))
        kafka.close()
    stub_median = statistics.median(results["StubBroker"])
    print(f"\nNo-op actor, 1 process x {args.threads} threads, {args.messages} messages, {args.runs} runs\n")
    print("| broker | tasks/s (median) | min | max | vs StubBroker |")
    print("|---|---:|---:|---:|---:|")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"| {name} | {median:,.0f} | {min(values):,.0f} | {max(values):,.0f} | {median / stub_median:.2f}x |")


if __name__ == "__main__":
    main()
