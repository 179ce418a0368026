"""The reference system's processes, started from the Procfile for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from broker import devkafka
from tests.eventually import eventually

ROOT = Path(__file__).resolve().parent.parent


def procfile(root: Path = ROOT) -> dict[str, str]:
    """The Procfile's process types and their command lines, verbatim."""
    entries = {}
    for line in (root / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries


def call(method: str, url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null"), dict(response.headers)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"null"), dict(error.headers)


class System:
    """The release, web, auth and payments processes of the Procfile, on their own topic prefix.

    Each runs as a platform runs a dyno: its command line verbatim, in a process group of its own,
    with ``DYNO`` set (``web.1``).

    Parameters:
      kafka(str): The bootstrap address of the Kafka the system uses.
      tmp_path(Path): Where the database and the processes' logs go.
      root(Path): The app's folder, where the Procfile is and the processes run.
    """

    def __init__(self, kafka: str, tmp_path: Path, *, root: Path = ROOT) -> None:
        self.root = root
        self.port = devkafka.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.database_url = f"sqlite:///{tmp_path / 'system.db'}"
        self.logs = tmp_path
        self.env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "KAFKA_TASKS_BROKER": "kafka",
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "KAFKA_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}.",
            "DATABASE_URL": self.database_url,
            "PORT": str(self.port),
            "WEB_CONCURRENCY": "1",
            "GET_USER_TIMEOUT_MS": "5000",
        }
        self.processes: dict[str, subprocess.Popen] = {}

    def release(self) -> subprocess.CompletedProcess:
        """Runs the Procfile's ``release`` line, as a platform does before new code serves."""
        return subprocess.run(
            ["bash", "-c", procfile(self.root)["release"]],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self) -> None:
        release = self.release()
        assert release.returncode == 0, release.stdout + release.stderr
        self.start_processes()

    def start_processes(self) -> None:
        """Starts every process of the Procfile but ``release`` (web, auth, payments, clock), and
        waits until the web one is ready."""
        commands = procfile(self.root)
        for name in (name for name in commands if name != "release"):
            with open(self.logs / f"{name}.log", "w") as log:
                self.processes[name] = subprocess.Popen(
                    ["bash", "-c", f"exec {commands[name]}"],
                    cwd=self.root,
                    env={**self.env, "DYNO": f"{name}.1"},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

        def ready() -> bool:
            try:
                return call("GET", f"{self.base}/readyz")[0] == 200
            except OSError:
                return False

        eventually(
            ready, timeout=60, interval=0.2, what="the web process to be ready", progress=lambda: self.log("web")
        )

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()[-3000:]

    def wait_for(self, task_id: str, *statuses: str, timeout: float = 60) -> dict:
        """Polls a task's status until it is one of ``statuses``, and returns the task."""
        seen = []

        def reached() -> dict | None:
            status, body, _ = call("GET", f"{self.base}/api/tasks/{task_id}")
            seen[:] = [body]
            return body if status == 200 and body["status"] in statuses else None

        return eventually(
            reached,
            timeout=timeout,
            interval=0.1,
            what=f"task {task_id} to reach {statuses}",
            progress=lambda: f"{seen}\nauth:\n{self.log('auth')}\npayments:\n{self.log('payments')}",
        )

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
