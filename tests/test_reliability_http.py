"""Reliability at the HTTP edge: generated bad input, and a steady load near capacity.

Scenario 5 runs schemathesis against the gateway's own OpenAPI document, in process (WSGI), on the
StubBroker and a SQLite file.  Scenario 6 runs the Procfile's processes on the session's Kafka at
about 70 % of the gateway's measured capacity and watches errors, memory and consumer lag.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import dramatiq
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from gateway import create_app
from tasks.app import build_system
from tasks.config import Config
from tests.reliability import report
from tests.services import Stream, consumer_lag, task_statuses

pytestmark = pytest.mark.reliability

# Scenario 5: bad HTTP input ----------------------------------------------------------------------

#: Generated cases per operation; six operations make a few hundred in all.
CASES_PER_OPERATION = int(os.environ.get("RELIABILITY_HTTP_CASES", "60"))

#: Users that exist, so that lookups and payments meet real rows too.
KNOWN_USERS = [("Ada", "ada@example.com"), ("Grace", "grace@example.com")]

#: Responses tallied by operation and status, reported at the end of the module.
_tally: Counter = Counter()


#: Where the gateway under test keeps its SQLite database.
DATABASE_FOLDER = Path(tempfile.mkdtemp(prefix="kafka-tasks-http-"))

#: The gateway under test, on the StubBroker, built at import: schemathesis reads its OpenAPI
#: document to generate the tests.  Building it touches no network and no database.
SYSTEM = build_system(
    Config(broker="stub", database_url=f"sqlite:///{DATABASE_FOLDER / 'gateway.db'}", user_lookup_timeout_ms=1_000)
)
GATEWAY = create_app(SYSTEM.config, broker=SYSTEM.broker, store=SYSTEM.store)


@pytest.fixture(scope="module")
def gateway_backends():
    """What the gateway talks to: its StubBroker with a worker that answers user lookups, and its
    fresh SQLite database with two users.
    """
    broker, store = SYSTEM.broker, SYSTEM.store
    store.create_schema()
    for n, (name, email) in enumerate(KNOWN_USERS):
        store.create_user(name=name, email=email, task_id=f"seed-{n}")
    worker = dramatiq.Worker(broker, queues={"auth"}, worker_threads=2)
    worker.start()
    try:
        yield
    finally:
        worker.stop()
        store.engine.dispose()
        shutil.rmtree(DATABASE_FOLDER, ignore_errors=True)
        statuses = Counter()
        for (_, status), n in _tally.items():
            statuses[status] += n
        report("Bad HTTP input", "generated requests", sum(statuses.values()))
        report("Bad HTTP input", "responses by status", ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
        report("Bad HTTP input", "5xx responses", sum(n for s, n in statuses.items() if s >= 500))
        paths = GATEWAY.test_client().get("/api/openapi.json").get_json()["paths"]
        operations = {
            f"{method.upper()} {path}"
            for path, item in paths.items()
            for method in item
            if method in ("get", "post", "put", "patch", "delete")
        }
        untested = sorted(operations - {label for label, _ in _tally})
        report(
            "Bad HTTP input",
            "operations exercised",
            f"{len(operations) - len(untested)} of {len(operations)}"
            + (f" (not: {', '.join(untested)})" if untested else ""),
        )


def documented_json_error(ctx, response, case) -> None:
    """Every error is the gateway's JSON error, with a status the operation documents by number.

    flask-smorest documents a ``default`` response on every operation, which would let any status
    pass schemathesis's own ``status_code_conformance``; this check does not count it.  A 405 is
    allowed for a method the operation does not have (schemathesis probes those).
    """
    status = response.status_code
    _tally[(case.operation.label, status)] += 1
    if status < 400:
        return
    documented = {int(code) for code in case.operation.responses.status_codes if code.isdigit()}
    probing_method = case.method.upper() != case.operation.method.upper()
    assert status in documented or (status == 405 and probing_method), (
        f"{case.method} {case.formatted_path} answered {status}, which {case.operation.label} does not document "
        f"(documents {sorted(documented)})"
    )
    content_type = {name.lower(): values for name, values in response.headers.items()}.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"{status} answer is not JSON: {content_type!r}"
    body = json.loads(response.content)
    assert isinstance(body, dict) and body.get("code") == status and isinstance(body.get("message"), str), (
        f"{status} answer is not the gateway's JSON error: {body!r}"
    )


# Loaded eagerly: schemathesis 4's lazy ``schemathesis.pytest.from_fixture`` fails on pytest 9.2
# ("'Function' object has no attribute '_nodeid'").
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", GATEWAY)


@pytest.mark.timeout(240)
@schema.parametrize()
@settings(max_examples=CASES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_get_no_5xx_and_documented_json_errors(case, gateway_backends):
    # Given a generated request, valid or not, when the gateway answers it
    # Then it is no 5xx, and an error is JSON with a status the operation documents
    case.call_and_validate(
        checks=[not_a_server_error, content_type_conformance, response_schema_conformance, documented_json_error]
    )


# Scenario 6: load ----------------------------------------------------------------------------------

#: How long the steady load runs (s); "several minutes" by hand, a minute in CI.
LOAD_SECONDS = int(os.environ.get("RELIABILITY_LOAD_SECONDS", "60"))

#: How long the gateway's capacity is measured, with how many clients, and the share of it to run at.
CAPACITY_SECONDS, CAPACITY_CLIENTS, LOAD_SHARE = 5, 16, 0.7

#: How long the processes warm up at the steady rate before their memory is first read (s).
WARM_UP = 5

#: How much a process's RSS may grow over the steady load and still count as flat.
RSS_GROWTH = 0.25


def _percentile(values, share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


@pytest.mark.timeout(LOAD_SECONDS + 200)
def test_steady_load_near_capacity_has_no_errors_flat_memory_and_no_lag(services, kafka):
    user = services.sign_up("Ada", "ada@example.com")

    def mixed(n: int):  # Half sign-ups, half payments.
        if n % 2:
            return (
                "POST",
                "/api/payments/pay",
                {"userId": user["id"], "amount": "3.00"},
                {"Idempotency-Key": f"load-{n}"},
            )
        return "POST", "/api/auth/sign-up", {"name": f"User {n}", "email": f"load{n}@example.com"}, None

    # Given the gateway's capacity, measured with many clients sending back to back
    probe = Stream(services.base, mixed, clients=CAPACITY_CLIENTS, rate=10**6).start()
    time.sleep(CAPACITY_SECONDS)
    measured = probe.stop()
    capacity = sum(r[3] == 202 for r in measured) / CAPACITY_SECONDS
    rate = LOAD_SHARE * capacity

    # When requests arrive at 70 % of it, steadily
    stream = Stream(services.base, lambda n: mixed(n + 10**6), clients=CAPACITY_CLIENTS, rate=rate).start()
    time.sleep(WARM_UP)
    rss_start, rss_peak = services.rss(), Counter()
    load_started = time.monotonic()
    while time.monotonic() - load_started < LOAD_SECONDS:
        time.sleep(min(5, LOAD_SECONDS - (time.monotonic() - load_started)))
        for process, kib in services.rss().items():
            rss_peak[process] = max(rss_peak[process], kib)
    rss_end = services.rss()
    results = stream.stop()
    load_took = time.monotonic() - load_started + WARM_UP

    # Then nothing failed, memory stayed flat, and the consumers caught up
    statuses = Counter(r[3] if r[6] is None else r[6].split(":")[0] for r in [*measured, *results])
    accepted = {r[4]["taskId"] for r in [*measured, *results] if r[3] == 202}
    drained_from = time.monotonic()
    services.wait_until(
        "consumer lag back to zero after the load",
        lambda: not any(consumer_lag(kafka, services.prefix).values()),
        lambda: consumer_lag(kafka, services.prefix),
        timeout=120,
        logs=("auth", "payments"),
    )
    drained = time.monotonic() - drained_from
    final = task_statuses(services.store, accepted)
    errors = {
        name: services.log_text(name).count("[ERROR]") + services.log_text(name).count("Traceback")
        for name in ("web", "auth", "payments")
    }
    latencies = [r[2] for r in results if r[3] == 202]

    report("Load", "load duration (s; RELIABILITY_LOAD_SECONDS)", f"{LOAD_SECONDS} (+{WARM_UP} warm-up)")
    report("Load", "measured capacity (202/s, 16 clients, half sign-ups, half payments)", f"{capacity:.0f}")
    report("Load", "target / achieved rate (req/s)", f"{rate:.0f} / {len(results) / load_took:.0f}")
    report("Load", "requests / answers", f"{len(measured) + len(results)} / {dict(statuses)}")
    report(
        "Load",
        "latency at the steady rate, p50 / p99 (ms)",
        f"{_percentile(latencies, 0.5) * 1000:.0f} / {_percentile(latencies, 0.99) * 1000:.0f}",
    )
    report("Load", "tasks", dict(final))
    report("Load", "errors in the logs (web, auth, payments)", errors)
    report("Load", "consumer lag back to zero after the load (s)", f"{drained:.1f}")
    for process in sorted(rss_start):
        report(
            "Load",
            f"RSS {process.split('/')[0]} pid {process.split('/')[1]}: start / peak / end (MiB)",
            f"{rss_start[process] / 1024:.0f} / {rss_peak[process] / 1024:.0f} / {rss_end.get(process, 0) / 1024:.0f}",
        )
    assert set(statuses) == {202}, f"answers other than 202: {statuses}"
    assert final == Counter({"succeeded": len(accepted)}), final
    assert set(rss_end) == set(rss_start), f"processes came or went during the load: {rss_start} -> {rss_end}"
    grown = {p: (rss_start[p], rss_end[p]) for p in rss_start if rss_end[p] > rss_start[p] * (1 + RSS_GROWTH)}
    assert not grown, f"RSS grew by more than {RSS_GROWTH:.0%} (KiB, start -> end): {grown}"
