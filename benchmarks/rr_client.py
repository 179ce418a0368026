"""The requester side of the request/response benchmark, run as its own process.

``python -m benchmarks.rr_client APP --users N --sequential N --concurrency N --per-thread N``
imports ``get_user`` from ``APP`` (``tasks.app``, the reference system built from the environment,
or ``benchmarks.rrapp`` for Redis), asks for
users one at a time and then from many threads, and prints the round trips (ms) as JSON.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

from .threads import in_threads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rr_client")
    parser.add_argument("app")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--sequential", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--per-thread", type=int, default=20)
    args = parser.parse_args(argv)
    if args.app == "tasks.app":
        from tasks.app import build_system
        from tasks.auth import get_user as declared

        built = build_system()
        get_user, backend = built.actor(declared), built.backend
    else:
        app = importlib.import_module(args.app)
        get_user, backend = app.get_user, app.backend

    def ask(n: int, timeout: int = 10_000) -> float:
        started = time.perf_counter()
        user = get_user.send(1 + n % args.users).get_result(backend=backend, block=True, timeout=timeout)
        elapsed = (time.perf_counter() - started) * 1000
        if not user:
            raise RuntimeError(f"no user {1 + n % args.users}")
        return elapsed

    ask(0, timeout=60_000)  # the first one waits for both sides to be ready
    for n in range(args.warmup):
        ask(n)
    sequential = [ask(n) for n in range(args.sequential)]

    concurrent: list[float] = []
    errors: list[str] = []

    def requester(i: int) -> None:
        try:
            for n in range(args.per_thread):
                concurrent.append(ask(i * args.per_thread + n, timeout=30_000))
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")

    wall = in_threads(requester, args.concurrency)
    json.dump(
        {"sequential": sequential, "concurrent": concurrent, "concurrent_seconds": wall, "errors": errors}, sys.stdout
    )
    sys.stdout.flush()
    # Leave at once: the backend's listener and producer threads have nothing left to deliver.
    import os

    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
