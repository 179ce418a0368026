"""Scenario 4, request/response: the ``get_user`` round trip, sequential and 50 requesters at once.

The responder is the Procfile's ``auth`` process (``kafka-tasks worker tasks.app:setup_broker --queues auth
--processes 1 --threads 8``) on a fresh ``KAFKA_PREFIX`` and SQLite database; the requester is
another process (:mod:`benchmarks.rr_client`) that sends ``get_user`` and blocks on its result,
as the gateway's ``GET /api/users/<id>`` does.  Baseline: the same actor on Dramatiq's
RedisBroker with its RedisBackend (:mod:`benchmarks.rrapp`).
"""

from __future__ import annotations

import functools
import json
import statistics
import subprocess
from pathlib import Path

from . import procs
from .context import Context
from .rows import median_run, percentile, row, unavailable

NAME = "request_response"
TITLE = "4. Request/response (get_user round trip)"

#: Concurrent requesters in the second mode.
CONCURRENCY = 50

USERS = 100

SYSTEMS = {"kafka": "KafkaBroker + KafkaResultBackend", "redis": "RedisBroker + RedisBackend"}


def run(ctx: Context) -> list[dict]:
    measured, notes = ctx.measure_in_turn(
        {kind: functools.partial(measure, ctx, kind) for kind in SYSTEMS}, subject="kafka", servers={"redis": "redis"}
    )
    rows = []
    for mode, case in (("sequential", "sequential"), ("concurrent", f"{CONCURRENCY} concurrent requesters")):
        for kind, system in SYSTEMS.items():
            runs = [result[mode] for result in measured.get(kind, [])]
            if not runs:
                rows.append(unavailable(NAME, case, system, notes.get(kind, "not measured"), metric="p50", unit="ms"))
                continue
            rows.append(
                row(
                    NAME,
                    case,
                    system,
                    "p50",
                    "ms",
                    [statistics.median(r) for r in runs],
                    better="lower",
                    samples=median_run(runs),
                )
            )
            rows.append(row(NAME, case, system, "p99", "ms", [percentile(r, 0.99) for r in runs], better="lower"))
            if mode == "concurrent":
                rates = [len(result["concurrent"]) / result["concurrent_seconds"] for result in measured[kind]]
                rows.append(row(NAME, case, system, "throughput", "requests/s", rates))
    return rows


def measure(ctx: Context, kind: str) -> dict:
    """Runs a responder and a requester process once; returns the requester's report."""
    queue = "auth" if kind == "kafka" else ctx.queue("auth")
    database = Path(ctx.workdir) / f"rr-{ctx.queue('db')}.sqlite"
    env = ctx.env(
        KAFKA_TASKS_BROKER=kind, KAFKA_PREFIX=ctx.prefix(), DATABASE_URL=f"sqlite:///{database}", BENCH_QUEUE=queue
    )
    seed(ctx, env)
    log = Path(ctx.workdir) / "logs" / f"rr-{kind}-{queue}.log"
    if kind == "kafka":
        release = subprocess.run(
            [ctx.bin("kafka-tasks"), "release"], env=env, capture_output=True, text=True, timeout=120
        )
        if release.returncode:
            raise RuntimeError(f"kafka-tasks release failed: {release.stderr.strip()[-300:]}")
        command = [
            ctx.bin("kafka-tasks"),
            "worker",
            "tasks.app:setup_broker",
            "--queues",
            "auth",
            "--processes",
            "1",
            "--threads",
            "8",
        ]
        app = "tasks.app"
    else:
        command = [ctx.python, "-m", "broker.worker", "benchmarks.rrapp", "--threads", "8"]
        app = "benchmarks.rrapp"
    responder = procs.start(command, env, log)
    try:
        client = subprocess.run(
            [
                ctx.python,
                "-m",
                "benchmarks.rr_client",
                app,
                "--users",
                str(USERS),
                "--sequential",
                str(ctx.size(500, 20)),
                "--warmup",
                str(ctx.size(20, 2)),
                "--concurrency",
                str(ctx.size(CONCURRENCY, 5)),
                "--per-thread",
                str(ctx.size(20, 2)),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ctx.workdir,
        )
    finally:
        procs.stop(responder)
    if client.returncode:
        raise RuntimeError(f"the requester failed: {client.stderr.strip()[-400:]}; responder: {procs.tail(log, 3)}")
    report = json.loads(client.stdout)
    if report["errors"]:
        raise RuntimeError(f"{len(report['errors'])} requests failed, e.g. {report['errors'][0]}")
    return report


def seed(ctx: Context, env: dict) -> None:
    """Creates the schema and the users the requester asks for."""
    from tasks.store import Store

    store = Store(env["DATABASE_URL"])
    store.create_schema()
    for n in range(1, USERS + 1):
        store.create_user(name=f"User {n}", email=f"user{n}@example.com", task_id=f"seed-{n}")
    store.engine.dispose()
