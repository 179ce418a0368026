"""Smoke test of the benchmark suite: every scenario runs for about a second, so none rots.

No timing is asserted: each scenario must return well-formed rows, and KafkaBroker's (and, where
the scenario has one, StubBroker's) figures must be there.  Baselines whose servers or packages
are missing (redis-server, rabbitmq-server, Celery, wrk, py-spy) may be reported unavailable.
"""

from __future__ import annotations

import importlib
import math
import uuid

import dramatiq
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks import SCENARIOS
from benchmarks.context import Context
from benchmarks.rows import KEYS
from benchmarks.services import Rabbitmq, Redis, ServiceUnavailable
from tests.eventually import eventually

#: Scenarios whose StubBroker figures must be measured (it needs nothing installed).
WITH_STUB = {"worker_throughput", "enqueue", "latency"}

#: Scenarios that may report everything unavailable: the gateway is optional here, py-spy too.
OPTIONAL = {"http_signup", "profiles"}


@pytest.fixture(scope="module")
def bench(kafka, postgres_server, tmp_path_factory):
    """A smoke-mode benchmark context on the session's Kafka and PostgreSQL, with Redis and
    RabbitMQ if installed."""
    workdir = tmp_path_factory.mktemp("bench")
    urls, errors, services = {"postgres": postgres_server}, {}, []
    for name, service in (("redis", Redis(workdir)), ("rabbitmq", Rabbitmq(workdir))):
        try:
            urls[name] = service.start()
            services.append(service)
        except (ServiceUnavailable, OSError) as e:
            errors[name] = str(e)
    previous = dramatiq.broker.global_broker  # get_broker() would make one up when none is set
    yield Context(bootstrap_servers=kafka, workdir=workdir, runs=1, smoke=True, urls=urls, errors=errors)
    dramatiq.set_broker(previous)
    for service in services:
        service.stop()


def assert_well_formed(name: str, rows: list[dict]) -> None:
    assert rows, f"{name} returned no rows"
    for r in rows:
        assert set(KEYS) <= set(r), f"{name}: a row lacks {set(KEYS) - set(r)}"
        assert r["scenario"] == name
        assert r["status"] in ("ok", "unavailable")
        assert isinstance(r["case"], str) and isinstance(r["system"], str) and isinstance(r["metric"], str)
        if r["status"] == "ok":
            assert r["runs"], r
            for value in (*r["runs"], r["median"], r["min"], r["max"]):
                assert isinstance(value, float) and math.isfinite(value), r
            # Lateness and memory growth may dip below zero; nothing else may.
            if not r["metric"].startswith(("lateness", "RSS growth")):
                assert min(r["runs"]) >= 0, r
            # Even a one-second run of our own broker moves something: zero means nothing was counted.
            if r["metric"] == "throughput" and "KafkaBroker" in r["system"]:
                assert min(r["runs"]) > 0, r
            assert r["min"] <= r["median"] <= r["max"], r
        else:
            assert r["note"], f"{name}: an unavailable row must say why: {r}"


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_runs_and_returns_well_formed_rows(bench, name):
    # Given a scenario, in smoke mode on the real Kafka
    module = importlib.import_module(f"benchmarks.{name}")
    # When it runs
    rows = module.run(bench)
    # Then its rows are well formed, with KafkaBroker's figures (and StubBroker's where it has them)
    assert_well_formed(name, rows)
    if name not in OPTIONAL:
        assert any(r["status"] == "ok" and "KafkaBroker" in r["system"] for r in rows), rows
    if name in WITH_STUB:
        assert any(r["status"] == "ok" and r["system"] == "StubBroker" for r in rows), rows


def test_report_is_written_from_rows(tmp_path):
    # Given rows as the scenarios return them
    from benchmarks import report
    from benchmarks.rows import row, unavailable

    rows = [
        row("worker_throughput", "8 threads", "KafkaBroker", "throughput", "tasks/s", [6000.0, 7000.0, 6500.0]),
        row("worker_throughput", "8 threads", "StubBroker", "throughput", "tasks/s", [9000.0, 9500.0, 9100.0]),
        unavailable(
            "worker_throughput",
            "8 threads",
            "RedisBroker",
            "redis-server is not installed",
            metric="throughput",
            unit="tasks/s",
        ),
    ]
    # When the report is written
    report.write(
        {"scenarios": {"worker_throughput": {"rows": rows, "runs": 3}}, "machine": {"CPU": "2 cores"}},
        tmp_path / "benchmarks.md",
    )
    # Then it has the figures, the ratio to the baseline, the verdict and the reason for the missing one
    text = (tmp_path / "benchmarks.md").read_text()
    assert "6,500" in text and "0.71x StubBroker" in text
    assert "redis-server is not installed" in text
    assert "| No-op worker throughput, 8 threads ≥ 5,000 tasks/s | 6,500 tasks/s | met |" in text


def test_report_gives_every_rate_of_the_system_ladder_and_its_targets(tmp_path):
    from benchmarks import report, system

    def step(offered, sustained):
        cpu = {"web": 1.0, "auth": 1.5, "payments": 0.1, "Kafka": 0.5}
        return {
            "offered": offered,
            "accepted": float(offered),
            "processed": float(offered),
            "refused": 0,
            "lag at end": 12,
            "lag after": 0 if sustained else 40,
            "settled in": 0.3,
            "p50": 4.0,
            "p99": 40.0,
            "cpu": cpu,
            "sustained": sustained,
        }

    steps = [step(100, True), step(250, True), step(500, False)]
    rows = system._ladder_rows("SQLite, sign-ups", system.SIGN_UPS, steps)
    report.write({"scenarios": {"system": {"rows": rows, "runs": 1}}, "machine": {}}, tmp_path / "benchmarks.md")

    text = (tmp_path / "benchmarks.md").read_text()
    assert (
        "| SQLite, sign-ups | 500 | 500 | 500 | 12 | 40 (0.3) | 4.00 / 40.0 | "
        "3.10 (1.00, 1.50, 0.10, 0.50) | **not sustained** |" in text
    )
    assert "| The system, sign-ups, sustained end to end, SQLite ≥ 1,000/s | 250 tasks/s | **missed** |" in text
    assert "| CPU per sign-up, all processes, SQLite ≤ 1.0 ms | 3.10 ms | **missed** |" in text


def test_warm_up_sends_through_kafka_in_every_window(bench):
    # Given the session's Kafka, whose process this test does not own
    from benchmarks import warmup

    # When it is warmed up for 3 s, watched per second
    windows = warmup.run(bench, 3, window=1)
    # Then every window counted messages sent, and no CPU figure is made up for a broker it cannot see
    assert len(windows) >= 2
    assert all(messages > 0 and cpu is None for messages, cpu in windows), windows


def test_report_tells_how_kafka_warmed_up(tmp_path):
    from benchmarks import report

    report.write(
        {"scenarios": {}, "warmup": {"seconds": 75, "windows": [(20_000, 0.897), (60_000, 0.161)]}},
        tmp_path / "benchmarks.md",
    )
    text = (tmp_path / "benchmarks.md").read_text()
    assert "loaded for 75 s" in text and "0.90 ms, 0.16 ms" in text


def test_report_claims_no_kafka_cpu_for_a_remote_kafka(tmp_path):
    from benchmarks import report

    report.write(
        {"scenarios": {}, "warmup": {"seconds": 75, "windows": [(20_000, None), (60_000, None)]}},
        tmp_path / "benchmarks.md",
    )
    text = (tmp_path / "benchmarks.md").read_text()
    assert "loaded for 75 s" in text and "CPU per message" not in text


def test_delete_topics_deletes_only_the_benchmarks_topics(bench):
    # Given a topic of a benchmark run and one of somebody else's on the same Kafka
    admin = AdminClient({"bootstrap.servers": bench.bootstrap_servers})
    ours, theirs = f"{bench.prefix()}queue", f"not-a-bench-{uuid.uuid4().hex[:8]}"
    for future in admin.create_topics(
        [NewTopic(name, num_partitions=1, replication_factor=1) for name in (ours, theirs)]
    ).values():
        future.result()

    # When the benchmarks clean up before a run
    deleted = bench.delete_topics()

    # Then only the run's topic is gone (the broker's metadata may take a moment to say so)
    assert deleted >= 1

    def gone():
        topics = admin.list_topics(timeout=30).topics
        return topics if ours not in topics else None

    topics = eventually(gone, timeout=10, interval=0.2, what=f"{ours} to be gone")
    assert ours not in topics
    assert theirs in topics
    admin.delete_topics([theirs])
