"""Reliability: the clock's leader SIGKILLed at random moments, and every tick run exactly once.

Two `kafka-tasks clock` processes and a `kafka-tasks worker` run `tests/clockapp.py`, whose one
schedule fires every second (missed ticks: all).  Three times, at a random moment, the process that
leads is SIGKILLed and a new clock started, so two are always running.  Over 60 ticks, each tick's
actor run is a row in SQLite (no uniqueness), counted by message id and by tick.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.eventually import eventually
from tests.processes import group_members
from tests.reliability import report
from tests.system import ROOT

pytestmark = pytest.mark.reliability

#: How many ticks the scenario watches, and how many leaders it kills meanwhile.
TICKS, KILLS = 60, 3

BIN = Path(sys.executable).parent


class Process:
    """A `kafka-tasks` process of the scenario, in its own process group, logging to a file."""

    def __init__(self, name: str, args: list[str], env: dict, logs: Path) -> None:
        self.name, self.log_file = name, logs / f"{name}.log"
        with open(self.log_file, "w") as log:
            self.popen = subprocess.Popen(
                [str(BIN / "kafka-tasks"), *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def leads(self) -> bool:
        """Whether it said it leads, and has not said since that it no longer does."""
        lines = [line for line in self.log().splitlines() if "clock leads now" in line or "no longer leads" in line]
        return self.popen.poll() is None and bool(lines) and "leads now" in lines[-1]

    def kill(self) -> None:
        if group_members(self.popen.pid):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


def rows(db: Path) -> list[tuple[str, str, int, int]]:
    if not db.exists():
        return []
    with sqlite3.connect(db, timeout=30) as connection:
        try:
            return connection.execute("SELECT message_id, tick, sent_ms, ran_ms FROM ticks").fetchall()
        except sqlite3.OperationalError:  # the table is made by the first run
            return []


def millis(tick: str) -> int:
    return int(dt.datetime.fromisoformat(tick).timestamp() * 1000)


def test_a_leader_killed_three_times_repeats_and_loses_no_tick(kafka, tmp_path):
    db = tmp_path / "ticks.db"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "KAFKA_PREFIX": f"clock-{uuid.uuid4().hex[:8]}.",
        "TICKS_DB": str(db),
        "TICK_QUEUE": "ticks",
    }
    app = "tests.clockapp:setup"
    processes = [Process("worker", ["worker", app, "--processes", "1", "--threads", "4"], env, tmp_path)]
    clocks = [Process(f"clock-{i}", ["clock", app], env, tmp_path) for i in range(2)]
    processes += clocks
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    kills: list[float] = []
    try:

        def leader() -> Process | None:
            return next((clock for clock in clocks if clock.leads()), None)

        def logs() -> str:
            return "\n".join(f"--- {p.name} ---\n{p.log()[-2000:]}" for p in processes)

        # Given a leader, and the first tick run
        eventually(leader, timeout=60, what="a clock to lead", progress=logs)
        eventually(lambda: rows(db), timeout=60, what="the first tick run", progress=logs)
        first = min(millis(tick) for _, tick, _, _ in rows(db))
        last = first + (TICKS - 1) * 1000
        # When, three times, the leader is SIGKILLed at a random moment, and a clock started instead
        for n in range(KILLS):
            current = eventually(leader, timeout=60, what="a clock to lead again", progress=logs)
            time.sleep(rng.uniform(2, 12))  # a random moment of its leadership
            kills.append(time.time())
            current.kill()
            clocks.remove(current)
            replacement = Process(f"clock-{KILLS + n}", ["clock", app], env, tmp_path)
            clocks.append(replacement)
            processes.append(replacement)
        # Then every tick up to the 60th runs
        eventually(
            lambda: {millis(tick) for _, tick, _, _ in rows(db)} >= set(range(first, last + 1, 1000)),
            timeout=120,
            what=f"{TICKS} ticks run",
            progress=lambda: f"{len(rows(db))} rows\n{logs()}",
        )
    finally:
        for process in processes:
            process.kill()

    watched = [row for row in rows(db) if first <= millis(row[1]) <= last]
    by_tick = {}
    for message_id, tick, sent_ms, ran_ms in watched:
        by_tick.setdefault(millis(tick), []).append((message_id, sent_ms, ran_ms))
    # Each exactly once, under one id a tick; none sent or run before its time
    assert sorted(by_tick) == list(range(first, last + 1, 1000))
    twice = {tick: runs for tick, runs in by_tick.items() if len(runs) != 1}
    assert twice == {}, f"ticks run more than once (seed {seed}): {twice}"
    assert len({message_id for message_id, _, _, _ in watched}) == TICKS
    early = [(tick, runs) for tick, runs in by_tick.items() if runs[0][1] < tick or runs[0][2] < tick]
    assert early == [], f"ticks sent or run early: {early}"

    # Measured: the time from each SIGKILL to the next tick sent, and how late ticks were sent
    gaps = [
        min(sent for runs in by_tick.values() for _, sent, _ in runs if sent > kill * 1000) / 1000 - kill
        for kill in kills
    ]
    during = {tick for tick in by_tick for kill, gap in zip(kills, gaps) if kill * 1000 <= tick <= (kill + gap) * 1000}
    lateness = sorted(runs[0][1] - tick for tick, runs in by_tick.items() if tick not in during)
    report("Clock", "ticks watched / leaders SIGKILLed (seed)", f"{TICKS} / {KILLS} ({seed})")
    report("Clock", "ticks run once / twice / never", f"{len(by_tick)} / {len(twice)} / {TICKS - len(by_tick)}")
    report("Clock", "failover: SIGKILL to the next tick sent (s)", ", ".join(f"{gap:.1f}" for gap in gaps))
    report("Clock", "ticks due during a failover, sent when it ended", str(len(during)))
    report(
        "Clock",
        "lateness of the other ticks, sent minus due, p50 / p99 (ms)",
        f"{statistics.median(lateness):.0f} / {lateness[int(len(lateness) * 0.99) - 1]:.0f}",
    )
