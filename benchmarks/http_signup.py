"""Scenario 5, HTTP: ``POST /api/auth/sign-up`` through gunicorn, as the Procfile's ``web`` runs it.

The ``web`` command is read from the Procfile and run with ``KAFKA_TASKS_BROKER=kafka``, the
cluster, a fresh ``KAFKA_PREFIX``, a SQLite ``DATABASE_URL`` and ``PORT``, after
``kafka-tasks release``; only its bind address is narrowed from 0.0.0.0 to 127.0.0.1.  wrk (from
Debian's packages) holds a fixed number of connections open for a fixed time, every request a new
sign-up.  A sign-up is answered 202 once Kafka has stored the task.  Baseline: the same gateway on
Dramatiq's StubBroker, which costs nothing, so the difference is the price of Kafka.  The CPU
time the gunicorn processes and the local Kafka broker used during the load, divided by the
requests served, shows where the cores go.  Without wrk, a small Python client stands in (and
says so).
"""

from __future__ import annotations

import functools
import http.client
import json
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from broker.devkafka import free_port

from . import procs
from .context import ROOT, Context
from .rows import percentile, row, unavailable
from .services import ServiceUnavailable, _wait_for_port
from .threads import in_threads

NAME = "http_signup"
TITLE = "5. HTTP: POST /api/auth/sign-up through gunicorn"

#: Open connections held by the load generator.
CONNECTIONS = 16

SYSTEMS = {"kafka": "gateway on KafkaBroker", "stub": "gateway on StubBroker"}

METRICS = (
    ("throughput", "requests/s", "higher"),
    ("p50", "ms", "lower"),
    ("p99", "ms", "lower"),
    ("gateway CPU", "ms per request", "lower"),
    ("Kafka CPU", "ms per request", "lower"),
)


def web_command() -> str:
    """Returns the Procfile's ``web`` command, bound to loopback only."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return line[len("web:") :].strip().replace("0.0.0.0:", "127.0.0.1:")
    raise RuntimeError("the Procfile has no web process")


def run(ctx: Context) -> list[dict]:
    case = f"{CONNECTIONS} connections"
    problem = _gateway_problem(ctx)
    if problem:
        return [
            unavailable(NAME, case, system, problem, metric=metric, unit=unit)
            for system in SYSTEMS.values()
            for metric, unit, _ in METRICS
        ]
    results, notes = ctx.measure_in_turn(
        {kind: functools.partial(measure, ctx, kind) for kind in SYSTEMS}, subject="kafka"
    )
    rows = []
    for kind, system in SYSTEMS.items():
        runs = results.get(kind, [])
        if not runs:
            rows.append(
                unavailable(NAME, case, system, notes.get(kind, "not measured"), metric="throughput", unit="requests/s")
            )
            continue
        errors = sum(r["errors"] for r in runs)
        note = f"{runs[0]['tool']}; {errors:,} non-2xx or failed requests" if errors else runs[0]["tool"]
        for metric, unit, better in METRICS:
            if metric not in runs[0]:
                continue
            rows.append(
                row(
                    NAME,
                    case,
                    system,
                    metric,
                    unit,
                    [r[metric] for r in runs],
                    better=better,
                    note=note if metric == "throughput" else "",
                )
            )
    return rows


def _gateway_problem(ctx: Context) -> str | None:
    """Tells why the gateway cannot be served (it is being written by another engineer), if so."""
    if not (ROOT / "gateway" / "wsgi.py").exists():
        return "not available: gateway/wsgi.py does not exist yet"
    check = subprocess.run(
        [ctx.python, "-c", "import gateway.wsgi"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=ctx.env(KAFKA_TASKS_BROKER="stub", DATABASE_URL=f"sqlite:///{ctx.workdir}/check.db"),
        timeout=120,
    )
    if check.returncode:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        return f"not available: gateway.wsgi does not import ({last})"
    return None


def measure(ctx: Context, kind: str) -> dict:
    """Serves the gateway once and loads it; returns throughput, p50, p99 and error count."""
    port = free_port()
    tag = uuid.uuid4().hex[:8]
    env = ctx.env(
        KAFKA_TASKS_BROKER=kind,
        KAFKA_PREFIX=ctx.prefix(),
        PORT=port,
        DATABASE_URL=f"sqlite:///{Path(ctx.workdir) / f'web-{tag}.sqlite'}",
    )
    release = subprocess.run(
        [ctx.bin("kafka-tasks"), "release"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    if release.returncode:
        raise RuntimeError(f"kafka-tasks release failed: {release.stderr.strip()[-300:]}")
    env["PATH"] = f"{Path(ctx.python).parent}:{env.get('PATH', '')}"
    log = Path(ctx.workdir) / "logs" / f"web-{kind}-{tag}.log"
    web = procs.start(["bash", "-c", f"exec {web_command()}"], env, log)
    try:
        try:
            _wait_for_port(port, 60, web)
        except ServiceUnavailable as e:
            raise RuntimeError(f"gunicorn {e}: {procs.tail(log, 5)}") from None
        status = _post(port)
        if status != 202:
            raise RuntimeError(f"a sign-up was answered {status}, not 202: {procs.tail(log, 5)}")
        seconds = ctx.size(8, 1)
        if shutil.which("wrk") and not ctx.smoke:
            _wrk(port, 2)  # warm-up: every gunicorn thread, the producer, SQLite
        # Where the CPU goes: the gunicorn arbiter and its workers, and the Kafka broker.
        gateway = [web.pid, *procs.children(web.pid)]
        kafka = [ctx.kafka_pid] if ctx.kafka_pid else []
        before = procs.cpu_seconds(*gateway), procs.cpu_seconds(*kafka)
        result = _wrk(port, seconds) if shutil.which("wrk") else _python_load(port, seconds)
        used = procs.cpu_seconds(*gateway) - before[0], procs.cpu_seconds(*kafka) - before[1]
    finally:
        procs.stop(web)
    requests = max(result.pop("requests"), 1)
    result["gateway CPU"] = used[0] * 1000 / requests
    if kafka:
        result["Kafka CPU"] = used[1] * 1000 / requests
    return result


def _post(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = json.dumps({"name": "Bench User", "email": f"warm-{uuid.uuid4().hex}@example.com"})
        connection.request("POST", "/api/auth/sign-up", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def _wrk(port: int, seconds: int) -> dict:
    script = Path(__file__).with_name("signup.lua")
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    try:
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        requests = int(re.search(r"(\d+) requests in ", out).group(1))
        p50 = _ms(re.search(r"^\s*50%\s+(\S+)\s*$", out, re.M).group(1))
        p99 = _ms(re.search(r"^\s*99%\s+(\S+)\s*$", out, re.M).group(1))
    except AttributeError:
        raise RuntimeError(f"could not read wrk's output: {out[-300:]}") from None
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    return {
        "throughput": rate,
        "p50": p50,
        "p99": p99,
        "errors": errors,
        "requests": requests,
        "tool": f"wrk, {seconds} s",
    }


def _python_load(port: int, seconds: float) -> dict:
    """A stand-in for wrk: keep-alive connections from threads, each request timed."""
    latencies: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + seconds

    def client(i: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            body = json.dumps({"name": "Bench User", "email": f"py-{i}-{n}-{uuid.uuid4().hex[:6]}@example.com"})
            started = time.perf_counter()
            try:
                connection.request("POST", "/api/auth/sign-up", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                if response.status >= 300:
                    errors[0] += 1
            except (TimeoutError, OSError, http.client.HTTPException):
                errors[0] += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            latencies.append((time.perf_counter() - started) * 1000)
        connection.close()

    elapsed = in_threads(client, CONNECTIONS)

    return {
        "throughput": len(latencies) / elapsed,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "errors": errors[0],
        "requests": len(latencies),
        "tool": "Python client (wrk is not installed)",
    }
