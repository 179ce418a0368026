"""Scenario 6, delays: 100,000 delayed messages pending, and how late due ones arrive.

A worker process (8 threads) starts and warms up; its resident memory is read; then 100,000
messages delayed by an hour are enqueued and stay pending for the whole run.  Meanwhile probe
messages are sent at a steady rate with delays from 0.2 s to 6 s (so they cross delay tiers and
hop between them), and each notes how late it started against its eta.  Memory is read again at
the end, and sampled throughout for its peak.  Baselines: Dramatiq's RedisBroker, whose worker
holds up to 1,000 delayed messages per thread in memory until they are due; and KafkaBroker with
its delay consumers' ``fetch.wait.max.ms`` back at librdkafka's default (500 ms) instead of
``broker.consumer.DUE_FETCH_WAIT_MS``.
"""

from __future__ import annotations

import functools
import random
import threading
import time

from . import procs
from .brokers import enqueue_all
from .context import Context
from .latency import paced
from .rows import median_run, percentile, row, unavailable
from .workers import WorkerProcess

NAME = "delays"
TITLE = "6. Delays: 100,000 pending, lateness of due messages"

#: The delay of the pending messages (ms): far beyond the run.
PENDING_DELAY_MS = 3_600_000

#: The probes' delays (s), drawn uniformly.
PROBE_DELAYS = (0.2, 6.0)

#: Each system: its name in the report, the broker kind, and consumer settings.
SYSTEMS = {
    "KafkaBroker": ("kafka", None),
    "Kafka, librdkafka's fetch wait (500 ms)": ("kafka", {"fetch.wait.max.ms": 500}),
    "RedisBroker": ("redis", None),
}


def run(ctx: Context) -> list[dict]:
    pending = ctx.size(100_000, 1_000)
    case = f"{pending:,} pending"
    measured, notes = ctx.measure_in_turn(
        {system: functools.partial(measure, ctx, kind, pending, config) for system, (kind, config) in SYSTEMS.items()},
        subject="KafkaBroker",
        servers={system: kind for system, (kind, _) in SYSTEMS.items() if kind == "redis"},
    )
    rows = []
    for system in SYSTEMS:
        runs = measured.get(system, [])
        if not runs:
            rows.append(
                unavailable(NAME, case, system, notes.get(system, "not measured"), metric="lateness p99", unit="ms")
            )
            continue
        rows.append(row(NAME, case, system, "RSS before", "MiB", [r["rss_before"] for r in runs], better="lower"))
        rows.append(
            row(
                NAME,
                case,
                system,
                "RSS after",
                "MiB",
                [r["rss_after"] for r in runs],
                better="lower",
                note="with the pending messages still pending",
            )
        )
        rows.append(row(NAME, case, system, "RSS peak", "MiB", [r["rss_peak"] for r in runs], better="lower"))
        rows.append(
            row(
                NAME,
                case,
                system,
                "RSS growth",
                "MiB",
                [r["rss_after"] - r["rss_before"] for r in runs],
                better="lower",
            )
        )
        delivered = [100 * len(r["lateness"]) / r["sent"] for r in runs]
        rows.append(
            row(
                NAME,
                case,
                system,
                "probes delivered",
                "%",
                delivered,
                note=f"{runs[0]['sent']:,} probes per run, waited up to {runs[0]['waited']:.0f} s",
            )
        )
        lateness = [r["lateness"] for r in runs if r["lateness"]]
        if lateness:
            rows.append(
                row(
                    NAME,
                    case,
                    system,
                    "lateness p50",
                    "ms",
                    [percentile(v, 0.5) for v in lateness],
                    better="lower",
                    samples=median_run(lateness),
                )
            )
            rows.append(
                row(NAME, case, system, "lateness p99", "ms", [percentile(v, 0.99) for v in lateness], better="lower")
            )
        else:
            rows.append(unavailable(NAME, case, system, "no probe was delivered", metric="lateness p99", unit="ms"))
    return rows


def measure(ctx: Context, kind: str, pending: int, consumer_config: dict | None = None) -> dict:
    with WorkerProcess(ctx, kind, name="delays", consumer_config=consumer_config) as worker:
        worker.warm_up()
        pid = worker.pids[0]
        time.sleep(ctx.size(1.0, 0.2))
        rss_before = procs.rss_mib(pid)
        peak = [rss_before]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.2):
                peak[0] = max(peak[0], procs.rss_mib(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            noop = worker.actors["noop"]
            enqueue_all(
                worker.broker,
                [noop.message(n) for n in range(pending)],
                delay=PENDING_DELAY_MS,
                threads=4 if kind == "kafka" else 8,
            )
            late = worker.actors["late"]
            rng = random.Random(7)

            def send():
                delay_ms = int(rng.uniform(*PROBE_DELAYS) * 1000)
                late.send_with_options(args=(time.time() * 1000 + delay_ms,), delay=delay_ms)

            sent = paced(send, ctx.size(200, 40), ctx.size(4.0, 0.5), senders=2)
            waited = time.monotonic()
            worker.wait(sent, PROBE_DELAYS[1] + ctx.size(15, 5))
            waited = time.monotonic() - waited
            rss_after = procs.rss_mib(pid)
        finally:
            stop.set()
            sampler.join()
        report = worker.stop()
    return {
        "rss_before": rss_before,
        "rss_after": rss_after,
        "rss_peak": max(peak[0], rss_after),
        "sent": sent,
        "lateness": report["samples"],
        "waited": waited,
    }
