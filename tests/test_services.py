"""The whole system end to end: the Procfile's processes, real Kafka, HTTP in and out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from broker import devkafka
from tasks.store import Store

ROOT = Path(__file__).resolve().parent.parent


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries


def call(method: str, url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null"), dict(response.headers)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"null"), dict(error.headers)


class System:
    """The release, web, auth and payments processes of the Procfile, on their own topic prefix."""

    def __init__(self, kafka: str, tmp_path: Path) -> None:
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

    def start(self) -> None:
        commands = procfile()
        release = subprocess.run(["bash", "-c", commands["release"]], cwd=ROOT, env=self.env,
                                 capture_output=True, text=True, timeout=120)
        assert release.returncode == 0, release.stdout + release.stderr
        for name in ("web", "auth", "payments"):
            log = open(self.logs / f"{name}.log", "w")
            self.processes[name] = subprocess.Popen(["bash", "-c", f"exec {commands[name]}"], cwd=ROOT, env=self.env,
                                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if call("GET", f"{self.base}/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the web process never became ready:\n{self.log('web')}")

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()[-3000:]

    def wait_for(self, task_id: str, *statuses: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        body = None
        while time.monotonic() < deadline:
            status, body, _ = call("GET", f"{self.base}/api/tasks/{task_id}")
            if status == 200 and body["status"] in statuses:
                return body
            time.sleep(0.1)
        raise AssertionError(f"task {task_id} stuck at {body}\nauth:\n{self.log('auth')}\npayments:\n{self.log('payments')}")

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


@pytest.fixture
def system(kafka, tmp_path):
    system = System(kafka, tmp_path)
    try:
        system.start()
        yield system
    finally:
        system.stop()


def test_sign_up_lookup_and_pay_end_to_end(system):
    # Sign up over HTTP, and see the task succeed
    status, body, headers = call("POST", f"{system.base}/api/auth/sign-up", {"name": "Ada", "email": "ada@example.com"})
    assert status == 202, body
    assert headers["Location"].endswith(body["statusUrl"])
    user = system.wait_for(body["taskId"], "succeeded", "failed", "dead")["result"]
    assert user["name"] == "Ada"
    # Look the user up through get_user's request/response
    status, found, _ = call("GET", f"{system.base}/api/users/{user['id']}")
    assert (status, found) == (200, {"id": user["id"], "name": "Ada", "email": "ada@example.com"})
    # Pay, and see the payment recorded with the user's name
    status, body, _ = call("POST", f"{system.base}/api/payments/pay", {"userId": user["id"], "amount": "42.00"},
                           headers={"Idempotency-Key": "order-1"})
    assert status == 202, body
    task = system.wait_for(body["taskId"], "succeeded", "failed", "dead")
    assert task["status"] == "succeeded", task
    assert task["result"]["userName"] == "Ada"
    assert "process payment for user Ada - amount: 42.00" in system.log("payments")
    assert [(p["userId"], p["amount"]) for p in Store(system.database_url).payments()] == [(user["id"], "42.00")]
    # The same Idempotency-Key returns the same task and charges nothing more
    status, again, _ = call("POST", f"{system.base}/api/payments/pay", {"userId": user["id"], "amount": "42.00"},
                            headers={"Idempotency-Key": "order-1"})
    assert (status, again["taskId"]) == (202, body["taskId"])
    assert len(Store(system.database_url).payments()) == 1


def test_paying_for_an_unknown_user_fails_with_the_reason(system):
    status, body, _ = call("POST", f"{system.base}/api/payments/pay", {"userId": 424242, "amount": "1.00"})
    assert status == 202, body
    task = system.wait_for(body["taskId"], "succeeded", "failed", "dead")
    assert (task["status"], task["error"]) == ("failed", "unknown user 424242")


def test_an_unknown_user_lookup_is_404(system):
    status, body, _ = call("GET", f"{system.base}/api/users/999999")
    assert status == 404
    assert body["code"] == 404
