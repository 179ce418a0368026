"""Profiles: py-spy samples of the code paths behind the targets, so the report can say what
limits each figure.

- the no-op worker (KafkaBroker, one process, 8 threads) while it drains a queue;
- ``enqueue_many`` in a loop (bulk enqueue);
- the gunicorn worker while wrk loads ``POST /api/auth/sign-up`` (when the gateway is there);
- the ``auth`` worker process answering sequential ``get_user`` requests.

Each profile's rows: the functions holding the CPU (metric "self %") and the packages anywhere on
the stack (metric "total %"), as shares of the samples of busy threads.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import dramatiq

from . import http_signup, procs, request_response
from .brokers import enqueue_all, make_broker
from .context import ROOT, Context
from .probe import Probe
from .profiling import py_spy, start, summarize
from .rows import row, unavailable

NAME = "profiles"
TITLE = "Profiles (py-spy)"

TARGETS = {
    "worker": "no-op worker, KafkaBroker, 8 threads",
    "enqueue_many": "KafkaBroker.enqueue_many, 1,000 per call",
    "http": "gunicorn worker, POST /api/auth/sign-up",
    "get_user": "auth worker process, sequential get_user",
}


def run(ctx: Context) -> list[dict]:
    if not py_spy():
        return [
            unavailable(
                NAME, case, "-", "py-spy is not installed (pip install -e '.[bench]')", metric="self %", unit="%"
            )
            for case in TARGETS.values()
        ]
    seconds = ctx.size(4, 1)
    rows = []
    for key, case in TARGETS.items():
        output = Path(ctx.workdir) / f"profile-{key}.txt"
        try:
            problem = globals()[f"_profile_{key}"](ctx, seconds, output)
        except Exception as e:
            problem = f"failed: {type(e).__name__}: {e}"
        if problem:
            rows.append(unavailable(NAME, case, "-", problem, metric="self %", unit="%"))
            continue
        summary = summarize(output)
        if not summary["samples"]:
            rows.append(unavailable(NAME, case, "-", "py-spy took no samples", metric="self %", unit="%"))
            continue
        note = f"{summary['samples']:,} samples"
        for function, package, share in summary["self"]:
            rows.append(row(NAME, case, f"{function} [{package}]", "self %", "%", [share], better="lower", note=note))
        for package, share in summary["total"]:
            rows.append(row(NAME, case, package, "total %", "%", [share], better="lower", note=note))
    return rows


def _wait(spy: subprocess.Popen) -> str | None:
    _, err = spy.communicate(timeout=120)
    return None if spy.returncode == 0 else f"py-spy failed: {err.decode(errors='replace').strip()[-200:]}"


def _profile_worker(ctx: Context, seconds: float, output: Path) -> str | None:
    import os

    broker = make_broker("kafka", bootstrap_servers=ctx.bootstrap_servers, prefix=ctx.prefix())
    probe = Probe()

    def noop(n):
        probe.hit()

    actor = dramatiq.actor(noop, broker=broker, queue_name=ctx.queue("noop"), max_retries=0)
    count = ctx.size(150_000, 3_000)
    enqueue_all(broker, [actor.message(n) for n in range(count)], threads=2)
    worker = dramatiq.Worker(broker, worker_threads=8, worker_timeout=100)
    worker.start()
    try:
        probe.wait(1, 60)
        spy = start(os.getpid(), seconds, output)
        problem = _wait(spy)
    finally:
        worker.stop()
        broker.close()
    return problem


def _profile_enqueue_many(ctx: Context, seconds: float, output: Path) -> str | None:
    import os

    broker = make_broker("kafka", bootstrap_servers=ctx.bootstrap_servers, prefix=ctx.prefix())

    def noop(n):
        pass

    actor = dramatiq.actor(noop, broker=broker, queue_name=ctx.queue("enqueue"), max_retries=0)
    broker.ensure_topics()
    actor.send(0)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            broker.enqueue_many([actor.message(n) for n in range(1_000)])

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        problem = _wait(start(os.getpid(), seconds, output))
    finally:
        stop.set()
        thread.join()
        broker.close()
    return problem


def _profile_http(ctx: Context, seconds: float, output: Path) -> str | None:
    import shutil

    problem = http_signup._gateway_problem(ctx)
    if problem:
        return problem
    if not shutil.which("wrk"):
        return "wrk is not installed"
    port = http_signup.free_port()
    env = ctx.env(
        KAFKA_TASKS_BROKER="kafka",
        KAFKA_PREFIX=ctx.prefix(),
        PORT=port,
        DATABASE_URL=f"sqlite:///{Path(ctx.workdir) / f'profile-{port}.sqlite'}",
    )
    subprocess.run([ctx.bin("kafka-tasks"), "release"], cwd=ROOT, env=env, capture_output=True, timeout=120, check=True)
    env["PATH"] = f"{Path(ctx.python).parent}:{env.get('PATH', '')}"
    log = Path(ctx.workdir) / "logs" / f"profile-web-{port}.log"
    web = procs.start(["bash", "-c", f"exec {http_signup.web_command()}"], env, log)
    try:
        http_signup._wait_for_port(port, 60, web)
        http_signup._post(port)
        load = threading.Thread(target=http_signup._wrk, args=(port, int(seconds) + 2))
        load.start()
        time.sleep(1)
        problem = _wait(start(web.pid, seconds, output, subprocesses=True))
        load.join()
    finally:
        procs.stop(web)
    return problem


def _profile_get_user(ctx: Context, seconds: float, output: Path) -> str | None:
    queue = "auth"
    database = Path(ctx.workdir) / f"profile-rr-{ctx.queue('db')}.sqlite"
    env = ctx.env(
        KAFKA_TASKS_BROKER="kafka", KAFKA_PREFIX=ctx.prefix(), DATABASE_URL=f"sqlite:///{database}", BENCH_QUEUE=queue
    )
    request_response.seed(ctx, env)
    subprocess.run([ctx.bin("kafka-tasks"), "release"], env=env, capture_output=True, timeout=120, check=True)
    log = Path(ctx.workdir) / "logs" / "profile-auth.log"
    responder = procs.start(
        [ctx.python, "-m", "broker.worker", "tasks.app:setup_broker", "--queues", "auth", "--threads", "8"], env, log
    )
    client = subprocess.Popen(
        [
            ctx.python,
            "-m",
            "benchmarks.rr_client",
            "tasks.app",
            "--sequential",
            str(ctx.size(3_000, 300)),
            "--concurrency",
            "1",
            "--per-thread",
            "1",
        ],
        env=env,
        cwd=ctx.workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(ctx.size(3, 2))  # both processes up, the first requests answered
        problem = _wait(start(responder.pid, seconds, output))
    finally:
        client.kill()
        client.wait()
        procs.stop(responder)
    return problem
