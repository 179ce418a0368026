"""Scenario 9, the system: the Procfile's ``web``, ``auth`` and ``payments`` under rising load.

The three processes run as ``make run`` runs them (their Procfile command lines, after
``kafka-tasks release``), on the local Kafka and a fresh database: SQLite, then PostgreSQL.  An
open-loop generator (:mod:`benchmarks.openloop`) sends sign-ups, then, on a fresh system, sign-ups
and payments in turn, at rising fixed rates, for ``STEP_SECONDS`` each.  A payment pays for one of
the users made before the steps, so it also costs the ``get_user`` round trip to the ``auth``
service.  At each rate:

- **accepted/s**: requests answered ``202``; **processed/s**: tasks that reached ``succeeded``
  during the step, read from the tasks table;
- **lag**: records of ``auth`` and ``payments`` their consumer groups have not committed past, at
  the end of the step and after up to ``SETTLE_SECONDS`` more (it is read until it reaches zero);
- **202 to succeeded**: p50 and p99 of the time from a task's creation (its message's timestamp,
  taken just before the send that the ``202`` waits for) to its ``succeeded`` write, over the
  step's tasks, read from the database;
- **CPU per task**: the CPU time each process tree (``web``'s gunicorn, ``auth``, ``payments``,
  Kafka) used from the step's start until its lag was gone, divided by the step's tasks.

A rate is *sustained* when every request got its ``202`` and the lag returned to zero within
``SETTLE_SECONDS``; the sustained rate reported is the highest such rate taken in (accepted/s),
and the ladder stops at the first rate that is not.  The load generator runs on the same two
cores and its CPU is not counted.  Each ladder runs once per ``make bench`` (a ladder is
itself a series of measurements); the per-payment CPU is the mix's CPU per task, doubled, less the
sign-ups' CPU per task.  The smoke run (``make test``) offers the mix at 20/s for 1.5 s, on both
databases.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from broker import KafkaBroker
from broker.devkafka import free_port
from broker.reading import group_offsets
from tasks.localrun import procfile

from . import openloop, procs
from .context import ROOT, Context
from .rows import percentile, row, unavailable
from .services import ServiceUnavailable, _wait_for_port

NAME = "system"
TITLE = "9. The system: web, auth and payments under rising load"

#: The Procfile's processes that run.
SERVICES = ("web", "auth", "payments")

SIGN_UPS, MIX = "sign-ups", "sign-ups and payments, 50/50"

#: The rates offered (requests/s), in turn, until one is not sustained.
LADDERS = {
    SIGN_UPS: (100, 250, 500, 750, 1000, 1250, 1500),
    MIX: (100, 200, 300, 450, 600, 750, 900),
}

#: How long each rate is offered, and how long its lag may take to return to zero (s).
STEP_SECONDS = 10
SETTLE_SECONDS = 10

#: The users made before the steps, whom the payments pay for.
USERS = 50

#: The actor of each kind of request.
KINDS = {SIGN_UPS: ("create_user",), MIX: ("create_user", "process_payment")}

SYSTEM = "KafkaBroker: web ×2, auth, payments"


def run(ctx: Context) -> list[dict]:
    databases = {"SQLite": None, "PostgreSQL": ctx.urls.get("postgres")}
    rows = []
    for database, server in databases.items():
        missing = database == "PostgreSQL" and not server
        for mix in (MIX,) if ctx.smoke else LADDERS:
            case = f"{database}, {mix}"
            if missing:
                reason = ctx.errors.get("postgres", "PostgreSQL is not running")
                rows.append(unavailable(NAME, case, SYSTEM, reason, metric="sustained", unit="tasks/s"))
                continue
            rows += _ladder_rows(case, mix, ladder(ctx, mix, server))
    return rows


def _ladder_rows(case: str, mix: str, steps: list[dict]) -> list[dict]:
    sustained = [s for s in steps if s["sustained"]]
    best = sustained[-1] if sustained else None
    # The sustained rate is the rate taken in (every request answered 202) and worked off, the lag
    # back to zero within SETTLE_SECONDS; what finished within the step itself is noted beside it.
    note = (
        f"offered {best['offered']:,}/s, {best['processed']:,.0f}/s finished within the step, "
        f"the rest within {best['settled in']:.1f} s"
        if best
        else "no rate was sustained"
    ) + f"; {len(steps)} rate(s) offered, {STEP_SECONDS} s each"
    summary = row(NAME, case, SYSTEM, "sustained", "tasks/s", [best["accepted"]] if best else [], note=note)
    summary["steps"] = steps
    rows = [summary]
    if best:
        cpu = best["cpu"]
        parts = ", ".join(f"{name} {cpu[name]:.2f}" for name in (*SERVICES, "Kafka") if name in cpu)
        rows.append(row(NAME, case, SYSTEM, "CPU per task", "ms", [sum(cpu.values())], better="lower", note=parts))
        rows.append(row(NAME, case, SYSTEM, "202 to succeeded p50", "ms", [best["p50"]], better="lower"))
        rows.append(row(NAME, case, SYSTEM, "202 to succeeded p99", "ms", [best["p99"]], better="lower"))
    if mix == MIX and steps and steps[0].get("payment p50") is not None:
        rows.append(
            row(
                NAME,
                case,
                SYSTEM,
                "payment message to row p50",
                "ms",
                [steps[0]["payment p50"]],
                better="lower",
                note=f"at {steps[0]['offered']}/s: the message's timestamp to the payment's row, get_user included",
            )
        )
    return rows


def ladder(ctx: Context, mix: str, server: str | None) -> list[dict]:
    """Offers the rates of a ladder to a fresh system; returns each step's figures."""
    rates = (20,) if ctx.smoke else LADDERS[mix]
    steps = []
    with RunningSystem(ctx, server) as system:
        system.warm_up()
        for rate in rates:
            step = system.step(mix, rate, ctx.size(STEP_SECONDS, 1.5))
            steps.append(step)
            if not step["sustained"]:
                break
    return steps


class RunningSystem:
    """``release``, then the Procfile's processes, on a fresh topic prefix and a fresh database.

    Parameters:
      server(str|None): A PostgreSQL server's URL, on which a new database is made; None: SQLite.
    """

    def __init__(self, ctx: Context, server: str | None) -> None:
        self.ctx = ctx
        self.tag = uuid.uuid4().hex[:8]
        self.database_url = self._database(server)
        self.port = free_port()
        self.prefix = ctx.prefix()
        self.env = ctx.env(
            KAFKA_TASKS_BROKER="kafka",
            KAFKA_PREFIX=self.prefix,
            DATABASE_URL=self.database_url,
            PORT=self.port,
            PATH=f"{Path(ctx.python).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        self.processes: dict[str, subprocess.Popen] = {}
        self.engine = None
        self.broker = None

    def _database(self, server: str | None) -> str:
        if server is None:
            return f"sqlite:///{Path(self.ctx.workdir) / f'system-{self.tag}.sqlite'}"
        name = f"system_{self.tag}"
        engine = create_engine(server, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return make_url(server).set(database=name).render_as_string(hide_password=False)

    def __enter__(self) -> RunningSystem:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        command = [self.ctx.bin("kafka-tasks"), "release"]
        release = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=180)
        if release.returncode:
            raise RuntimeError(f"kafka-tasks release failed: {release.stderr.strip()[-300:]}")
        commands = procfile(ROOT)
        for name in SERVICES:
            command = commands[name].replace("0.0.0.0:", "127.0.0.1:")
            log = Path(self.ctx.workdir) / "logs" / f"system-{self.tag}-{name}.log"
            self.processes[name] = procs.start(["bash", "-c", f"exec {command}"], self.env, log)
        try:
            _wait_for_port(self.port, 60, self.processes["web"])
        except ServiceUnavailable as e:
            raise RuntimeError(f"web {e}: {self.tail('web')}") from None
        self.engine = create_engine(self.database_url)
        self.broker = KafkaBroker(bootstrap_servers=self.ctx.bootstrap_servers, prefix=self.prefix)

    def tail(self, name: str) -> str:
        return procs.tail(Path(self.ctx.workdir) / "logs" / f"system-{self.tag}-{name}.log", 5)

    def stop(self) -> None:
        for process in self.processes.values():
            procs.stop(process)
        if self.broker is not None:
            self.broker.close()
        if self.engine is not None:
            self.engine.dispose()

    def warm_up(self) -> None:
        """Makes the users the payments pay for, and one payment, and waits until they are done:
        every process then has its consumers assigned, its connections open and its code warm."""
        load = openloop.run(self.port, 50, USERS / 50, _sign_up)
        if load.count(202) != USERS:
            raise RuntimeError(f"warm-up sign-ups were answered {load.statuses}: {self.tail('web')}")
        load = openloop.run(self.port, 10, 0.5, lambda i: _payment(i, USERS))
        if load.count(202) != load.due:
            raise RuntimeError(f"warm-up payments were answered {load.statuses}: {self.tail('web')}")
        if not procs.wait_for(lambda: self.finished(("create_user", "process_payment")) >= USERS + load.due, 120, 0.2):
            raise RuntimeError(f"the warm-up's tasks did not finish: {self.tail('auth')} {self.tail('payments')}")

    def step(self, mix: str, rate: int, seconds: float) -> dict:
        """Offers ``rate`` requests/s for ``seconds``; returns the step's figures."""
        requests = _sign_up if mix == SIGN_UPS else lambda i: (_sign_up, _payment)[i % 2](i, USERS)
        trees = {name: procs.descendants(process.pid) for name, process in self.processes.items()}
        if self.ctx.kafka_pid:
            trees["Kafka"] = [self.ctx.kafka_pid]
        cpu_before = {name: procs.cpu_seconds(*pids) for name, pids in trees.items()}
        load = openloop.run(self.port, rate, seconds, requests)
        ended = time.time()
        lag_at_end = self.lag()
        lag, settled = lag_at_end, ended
        while lag and time.time() < ended + SETTLE_SECONDS:
            time.sleep(0.25)
            lag, settled = self.lag(), time.time()
        cpu = {name: procs.cpu_seconds(*pids) - cpu_before[name] for name, pids in trees.items()}
        accepted = load.count(202)
        kinds = KINDS[mix]
        tasks = self.tasks(kinds, load.started, ended)
        succeeded = [t for t in tasks if t["status"] == "succeeded"]
        latencies = [(t["updated_at"] - t["created_at"]).total_seconds() * 1000 for t in succeeded]
        processed = sum(
            1
            for t in self.tasks(kinds, load.started - 3600, None)
            if t["status"] == "succeeded" and load.started <= t["done"] <= ended
        )
        step = {
            "offered": rate,
            "accepted": accepted / max(ended - load.started, 1e-9),
            "processed": processed / max(ended - load.started, 1e-9),
            "refused": load.due - accepted,
            "lag at end": lag_at_end,
            "lag after": lag,
            "settled in": settled - ended,
            "p50": percentile(latencies, 0.5) if latencies else None,
            "p99": percentile(latencies, 0.99) if latencies else None,
            "cpu": {name: used * 1000 / max(accepted, 1) for name, used in cpu.items()},
            "http p50": percentile(load.latencies, 0.5) if load.latencies else None,
            "http p99": percentile(load.latencies, 0.99) if load.latencies else None,
            # Kept up: every request answered 202, the answers no slower than the rate they were
            # asked at, and the lag gone within SETTLE_SECONDS.
            "sustained": accepted == load.due
            and accepted / max(ended - load.started, 1e-9) >= 0.95 * rate
            and lag == 0
            and len(succeeded) == accepted,
        }
        if mix == MIX:
            rows = self.payment_delays(load.started, ended)
            step["payment p50"] = percentile(rows, 0.5) if rows else None
        return step

    def lag(self) -> int:
        """Records of ``auth`` and ``payments`` not committed by their groups."""
        return sum(
            p.behind
            for queue in ("auth", "payments")
            for p in group_offsets(self.broker, self.broker.settings.group(queue), [self.broker.settings.topic(queue)])
        )

    def finished(self, kinds) -> int:
        """Tasks of these kinds that succeeded."""
        query = f"SELECT count(*) FROM tasks WHERE status = 'succeeded' AND kind IN ({_names(kinds)})"
        with self.engine.connect() as connection:
            return connection.execute(text(query)).scalar_one()

    def tasks(self, kinds, start: float, end: float | None) -> list[dict]:
        """The tasks of these kinds made from ``start`` to ``end`` (``time.time()``; None: now)."""
        query = (
            f"SELECT status, created_at, updated_at FROM tasks WHERE kind IN ({_names(kinds)}) AND created_at >= :start"
        )
        parameters = {"start": self._moment(start)}
        if end is not None:
            query += " AND created_at <= :end"
            parameters["end"] = self._moment(end)
        with self.engine.connect() as connection:
            found = connection.execute(text(query), parameters).all()
        return [
            {
                "status": status,
                "created_at": _utc(created_at),
                "updated_at": _utc(updated_at),
                "done": _utc(updated_at).timestamp(),
            }
            for status, created_at, updated_at in found
        ]

    def payment_delays(self, start: float, end: float) -> list[float]:
        """Milliseconds from each payment's message to its row, for the payments made in the window."""
        query = (
            "SELECT t.created_at, p.created_at FROM payments p JOIN tasks t ON t.id = p.task_id "
            "WHERE t.created_at >= :start AND t.created_at <= :end"
        )
        with self.engine.connect() as connection:
            found = connection.execute(text(query), {"start": self._moment(start), "end": self._moment(end)}).all()
        return [(_utc(row_at) - _utc(sent_at)).total_seconds() * 1000 for sent_at, row_at in found]

    def _moment(self, seconds: float):
        """A time as the database compares it: SQLite keeps UTC without a zone."""
        moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
        return moment.replace(tzinfo=None) if self.engine.dialect.name == "sqlite" else moment


def _names(kinds) -> str:
    return ", ".join(f"'{kind}'" for kind in kinds)


def _utc(moment):
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


def _sign_up(i: int, users: int = 0) -> tuple[str, bytes]:
    body = {"name": "Bench User", "email": f"system-{uuid.uuid4().hex}@example.com"}
    return "/api/auth/sign-up", json.dumps(body).encode()


def _payment(i: int, users: int) -> tuple[str, bytes]:
    body = {"userId": 1 + i % users, "amount": "12.50", "currency": "EUR"}
    return "/api/payments/pay", json.dumps(body).encode()
