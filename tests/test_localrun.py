"""``kafka-tasks run`` (``make run``): one environment for every part, and a run that tells the truth."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from broker import devkafka
from tasks.localrun import RunError, kafka_port, read_env, wants_local_kafka
from tests.eventually import eventually
from tests.processes import children_of, live_pids
from tests.system import ROOT, call

# Pure parts -------------------------------------------------------------------------------------


def test_dot_env_is_read_over_the_environment_as_honcho_reads_it(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text('DATABASE_URL=sqlite:////tmp/x.db\n# a comment\nKAFKA_TRUSTED_CERT="-----BEGIN\\nEND-----"\n')
    env = read_env(env_file, base={"DATABASE_URL": "sqlite:///other.db", "HOME": "/root"})
    assert env == {
        "DATABASE_URL": "sqlite:////tmp/x.db",
        "KAFKA_TRUSTED_CERT": "-----BEGIN\nEND-----",
        "HOME": "/root",
    }


def test_without_a_dot_env_the_environment_is_used_as_it_is(tmp_path):
    assert read_env(tmp_path / ".env", base={"PORT": "8000"}) == {"PORT": "8000"}


@pytest.mark.parametrize(
    "env, local",
    [
        ({}, True),
        ({"KAFKA_URL": " "}, True),
        ({"KAFKA_URL": "kafka+ssl://a:1"}, False),
        ({"KAFKA_BOOTSTRAP_SERVERS": "a:1"}, False),
    ],
)
def test_a_local_kafka_starts_only_when_no_cluster_is_named(env, local):
    assert wants_local_kafka(env) is local


def test_a_kafka_port_that_is_no_port_is_refused_naming_it():
    assert kafka_port({}) == 9092 and kafka_port({"KAFKA_PORT": "19092"}) == 19092
    with pytest.raises(RunError, match="KAFKA_PORT must be a port number"):
        kafka_port({"KAFKA_PORT": "ninety"})


# The run, for real --------------------------------------------------------------------------------


class Run:
    """``kafka-tasks run`` in a folder of its own (its Procfile, its ``.env``, its ``var/``)."""

    def __init__(self, folder: Path, dot_env: dict[str, str]) -> None:
        self.folder = folder
        shutil.copy(ROOT / "Procfile", folder / "Procfile")
        (folder / ".env").write_text("".join(f"{name}={value}\n" for name, value in dot_env.items()))
        self.out, self.err = folder / "run.out", folder / "run.err"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_URL", "PORT"))}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "kafka-tasks"), "run"],
                cwd=folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 120) -> None:
        eventually(lambda: text in self.output() or self.process.poll() is not None, timeout=timeout, what=text)
        assert text in self.output(), self.output()[-3000:]

    def jvm(self) -> int:
        [pid] = [pid for pid in children_of(self.process.pid) if "kafka.Kafka" in _cmdline(pid)]
        return pid

    def leftovers(self) -> list[str]:
        """The live processes that run in the run's folder, or on its data (Kafka's JVM)."""
        found = []
        for pid, _ in live_pids():
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            if cwd == str(self.folder) or str(self.folder) in _cmdline(pid):
                found.append(_cmdline(pid)[:200])
        return found

    def stop(self) -> None:
        for pid, _ in live_pids():
            if str(self.folder) in _cmdline(pid):
                os.kill(pid, signal.SIGKILL)  # a JVM the run left behind
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


@pytest.fixture
def ports():
    return devkafka.free_port(), devkafka.free_port()


@pytest.mark.kafka
def test_dot_env_reaches_every_part_and_a_dead_kafka_stops_the_run_in_one_line(tmp_path, ports):
    kafka_port, web_port = ports
    database = tmp_path / "from-dot-env.db"
    # Given a .env that names the database, the local Kafka's port and the web port
    run = Run(tmp_path, {"DATABASE_URL": f"sqlite:///{database}", "KAFKA_PORT": kafka_port, "PORT": web_port,
                         "WEB_CONCURRENCY": "1"})  # fmt: skip
    try:
        # When the system runs and a user signs up
        run.wait_for_output("API docs:")
        base = f"http://127.0.0.1:{web_port}"
        eventually(lambda: _ready(base), timeout=60, what="the web process to be ready", progress=run.output)
        status, body, _ = call("POST", f"{base}/api/auth/sign-up", {"name": "Ada", "email": "ada@example.com"})
        assert status == 202, body

        def succeeded():
            return call("GET", f"{base}/api/tasks/{body['taskId']}")[1]["status"] == "succeeded"

        eventually(succeeded, timeout=60, what="the sign-up to succeed", progress=run.output)
        # Then Kafka listens on KAFKA_PORT, and release and the services used the .env's database
        socket.create_connection(("127.0.0.1", kafka_port), timeout=5).close()
        with sqlite3.connect(database) as db:
            assert db.execute("SELECT name FROM users").fetchall() == [("Ada",)]
            assert db.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
        # And gunicorn says where it listens, and the banner where the dashboard is, with its password
        assert f"Listening at: http://0.0.0.0:{web_port}" in run.output()
        ops_line = next(line for line in run.output().splitlines() if line.startswith("Ops:"))
        password = ops_line.rsplit("password ", 1)[1].rstrip(")")
        token = base64.b64encode(f"ops:{password}".encode()).decode()
        request = urllib.request.Request(f"{base}/ops/workers", headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(request, timeout=30) as page:
            assert page.status == 200 and b"Workers" in page.read()

        # When the local Kafka dies under the run
        os.kill(run.jvm(), signal.SIGKILL)
        # Then the run stops its services and exits non-zero, its last line saying why
        assert run.process.wait(90) != 0
        last = run.err.read_text().strip().splitlines()[-1]
        assert last.startswith("kafka-tasks run: error: the local Kafka exited (status -9)"), last
    finally:
        run.stop()


@pytest.mark.kafka
def test_ctrl_c_stops_the_services_cleanly_then_kafka(tmp_path, ports):
    kafka_port, web_port = ports
    run = Run(tmp_path, {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "KAFKA_PORT": kafka_port,
                         "PORT": web_port, "WEB_CONCURRENCY": "1"})  # fmt: skip
    try:
        run.wait_for_output("API docs:")
        eventually(lambda: _ready(f"http://127.0.0.1:{web_port}"), timeout=60, what="readiness", progress=run.output)
        # When Ctrl-C reaches the run's process group
        os.killpg(run.process.pid, signal.SIGINT)
        # Then it exits 0, every service after a clean stop (so its consumers left their groups,
        # and the next start need not wait for their sessions to expire), and Kafka after them
        assert run.process.wait(90) == 0, run.output()[-3000:]
        output = run.output()
        for name in ("auth", "payments"):
            assert _line(output, name, "kafka-tasks worker stopped."), output[-3000:]
        assert _line(output, "web", "Shutting down: Master") and "SIGKILL" not in output, output[-3000:]
        assert run.leftovers() == [], "processes outlived the run"
    finally:
        run.stop()


def test_a_launcher_error_is_one_line(tmp_path, ports):
    kafka_port, web_port = ports
    # Given the local Kafka's port already taken, and an old broker log in the data folder
    (tmp_path / "var" / "kafka").mkdir(parents=True)
    (tmp_path / "var" / "kafka" / "server.log").write_text("[old] ERROR something from another day\n" * 50)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", kafka_port))
        taken.listen()
        run = Run(tmp_path, {"KAFKA_PORT": kafka_port, "PORT": web_port})
        try:
            # Then the run exits non-zero with one line that says why, and no old log lines
            assert run.process.wait(60) == 1
            assert run.err.read_text().strip().splitlines() == [
                f"kafka-tasks run: error: port {kafka_port} on 127.0.0.1 (KAFKA_PORT) is already in use; stop what "
                "uses it, set KAFKA_PORT, or name a running Kafka in KAFKA_BOOTSTRAP_SERVERS"
            ]
        finally:
            run.stop()


def _line(output: str, process: str, text: str) -> bool:
    """Whether honcho's output has a line of ``process`` that contains ``text``."""
    return any(line.split("|", 1)[0].split()[-1:] == [process] and text in line for line in output.splitlines())


def _ready(base: str) -> bool:
    try:
        return call("GET", f"{base}/readyz")[0] == 200
    except OSError:
        return False
