"""Round-trip latency of a get_user-like request, with the responder in a separate worker process.

Run: ``python benchmarks/request_response.py`` with ``KAFKA_BOOTSTRAP_SERVERS`` pointing at a
broker.  Prints p50/p99/max in ms, sequential and with 50 concurrent requester threads.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    os.environ.setdefault("BENCH_QUEUE", f"bench_rr_{uuid.uuid4().hex[:6]}")
    os.environ.setdefault("RESULTS_TOPIC", f"bench-results-{uuid.uuid4().hex[:6]}")
    sys.path.insert(0, str(ROOT))
    from benchmarks.rrapp import backend, broker, get_user

    worker = subprocess.Popen([sys.executable, "-m", "tasks.cli", "worker", "benchmarks.rrapp", "-p", "1", "-t", "8"],
                              cwd=ROOT, env=os.environ, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        get_user.send(0).get_result(backend=backend, block=True, timeout=60_000)  # warm up both sides
        for n in range(50):
            get_user.send(n).get_result(backend=backend, block=True, timeout=10_000)
        sequential = []
        for n in range(args.requests):
            started = time.perf_counter()
            get_user.send(n).get_result(backend=backend, block=True, timeout=10_000)
            sequential.append((time.perf_counter() - started) * 1000)

        concurrent: list[float] = []
        per_thread = max(1, args.requests // args.concurrency)

        def requester():
            for n in range(per_thread):
                started = time.perf_counter()
                get_user.send(n).get_result(backend=backend, block=True, timeout=30_000)
                concurrent.append((time.perf_counter() - started) * 1000)

        threads = [threading.Thread(target=requester) for _ in range(args.concurrency)]
        wall = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - wall
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
        backend.close()
        broker.close()
    print("\nget_user round trip, responder in a separate worker process (1 x 8 threads)\n")
    print("| mode | requests | p50 ms | p99 ms | max ms | requests/s |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| sequential | {len(sequential)} | {statistics.median(sequential):.2f} | {percentile(sequential, 0.99):.2f} "
          f"| {max(sequential):.2f} | {len(sequential) / (sum(sequential) / 1000):,.0f} |")
    print(f"| {args.concurrency} concurrent | {len(concurrent)} | {statistics.median(concurrent):.2f} "
          f"| {percentile(concurrent, 0.99):.2f} | {max(concurrent):.2f} | {len(concurrent) / wall:,.0f} |")


if __name__ == "__main__":
    main()
