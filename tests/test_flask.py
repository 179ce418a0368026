"""broker.flask: kafka-tasks in a Flask app of one's own, and the example a Flask user would write."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import dramatiq
import pytest
from flask import Flask, current_app

from broker import reading
from broker.flask import KafkaTasks
from tests.eventually import eventually
from tests.system import ROOT

EXAMPLE = "examples/welcome/app.py"
FLASK = str(Path(sys.executable).parent / "flask")


def stub_app(tmp_path, tasks: KafkaTasks, **config) -> Flask:
    """An app on Dramatiq's StubBroker and a SQLite status store, for logic without Kafka."""
    app = Flask(__name__)
    app.config.update(
        KAFKA_TASKS_BROKER="stub", KAFKA_TASKS_DATABASE_URL=f"sqlite:///{tmp_path / 'tasks.db'}", **config
    )
    tasks.init_app(app)
    app.register_blueprint(tasks.status_blueprint(), url_prefix="/tasks")
    with app.app_context():
        tasks.app_tasks().store.create_schema()
    return app


def test_an_actor_declared_before_the_app_runs_in_its_app_context(tmp_path):
    tasks = KafkaTasks()
    seen = []

    @tasks.actor(queue_name="greetings")
    def greet(name):
        seen.append(f"{current_app.config['GREETING']}, {name}")
        return len(seen)

    # Given an app set up after the actor was declared
    app = stub_app(tmp_path, tasks, GREETING="Hello")
    app.add_url_rule("/greet", "greet", lambda: tasks.enqueue(greet, "Ada"), methods=["POST"])
    client = app.test_client()
    # When a view sends it and a worker runs it
    answer = client.post("/greet")
    broker = app.extensions["kafka_tasks"].broker
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        broker.join("greetings")
    finally:
        worker.stop()
    # Then it read the app's config, and its status says it succeeded, with its result
    assert seen == ["Hello, Ada"]
    assert answer.status_code == 202 and answer.headers["Location"] == answer.get_json()["statusUrl"]
    status = client.get(answer.headers["Location"]).get_json()
    assert (status["status"], status["result"], status["kind"]) == ("succeeded", 1, "greet")


def test_an_unknown_task_is_a_json_404(tmp_path):
    app = stub_app(tmp_path, KafkaTasks())
    answer = app.test_client().get("/tasks/nothing-of-ours")
    assert (answer.status_code, answer.get_json()["code"]) == (404, 404)


def test_actors_declared_before_the_app_send_to_the_configured_cluster(kafka, tmp_path):
    tasks = KafkaTasks()

    @tasks.actor(queue_name="configured")
    def noted(n):
        pass

    # Given an app whose config names the cluster and a prefix of its own
    prefix = f"flask-{uuid.uuid4().hex[:8]}."
    app = Flask(__name__)
    app.config.update(
        KAFKA_TASKS_BOOTSTRAP_SERVERS=kafka, KAFKA_TASKS_PREFIX=prefix, KAFKA_TASKS_DATABASE_URL="sqlite://"
    )
    tasks.init_app(app)
    app.register_blueprint(tasks.status_blueprint(), url_prefix="/tasks")
    with app.test_request_context():
        tasks.app_tasks().store.create_schema()
        # When a task is sent
        answer = tasks.enqueue(noted, 7)
        broker = tasks.app_tasks().broker
        # Then Kafka has it, on the queue's topic under the prefix
        assert answer.status_code == 202
        records, _ = reading.read_to_end(broker, f"{prefix}configured")
        assert [json.loads(record.value())["message_id"] for record in records] == [answer.get_json()["taskId"]]
        broker.close()


def test_a_send_kafka_cannot_take_is_a_503_within_the_delivery_timeout(tmp_path):
    tasks = KafkaTasks()

    @tasks.actor(queue_name="nowhere")
    def lost():
        pass

    app = Flask(__name__)
    app.config.update(
        KAFKA_TASKS_BOOTSTRAP_SERVERS="127.0.0.1:1",
        KAFKA_TASKS_DELIVERY_TIMEOUT_MS=1000,
        KAFKA_TASKS_DATABASE_URL=f"sqlite:///{tmp_path / 'tasks.db'}",
    )
    tasks.init_app(app).store.create_schema()
    app.register_blueprint(tasks.status_blueprint(), url_prefix="/tasks")
    app.add_url_rule("/send", "send", lambda: tasks.enqueue(lost), methods=["POST"])
    started = time.monotonic()
    answer = app.test_client().post("/send")
    took = time.monotonic() - started
    # A bound of the promise (the delivery timeout), with a margin for a busy machine
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5", answer.get_json()
    assert answer.get_json()["message"].startswith("Kafka is unavailable; nothing was sent")
    assert took < 1 + 5, took
    app.extensions["kafka_tasks"].broker.close()


def test_the_broker_library_imports_without_flask_or_sqlalchemy():
    # Given a Python that cannot import Flask, SQLAlchemy, itsdangerous or werkzeug
    probe = textwrap.dedent("""
        import sys
        class Missing:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"flask", "sqlalchemy", "itsdangerous", "werkzeug", "marshmallow"}:
                    raise ImportError(f"no {name} here")
        sys.meta_path.insert(0, Missing())
        import broker, broker.broker, broker.consumer, broker.results, broker.dlq, broker.worker, broker.cli
        import broker.clock, broker.schedules, broker.release, broker.reading, broker.lazy
        broker.KafkaBroker(bootstrap_servers="127.0.0.1:1").declare_queue("q")
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    # Then the broker library imports and builds a broker all the same
    assert (out.returncode, out.stdout.strip()) == (0, "ok"), out.stderr


def load_example():
    spec = importlib.util.spec_from_file_location("welcome_example", ROOT / EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_sends_a_welcome_email_that_a_worker_process_writes(kafka, tmp_path, monkeypatch):
    outbox = tmp_path / "outbox"
    env = {
        "FLASK_KAFKA_TASKS_BOOTSTRAP_SERVERS": kafka,
        "FLASK_KAFKA_TASKS_PREFIX": f"welcome-{uuid.uuid4().hex[:8]}.",
        "FLASK_KAFKA_TASKS_DATABASE_URL": f"sqlite:///{tmp_path / 'tasks.db'}",
        "FLASK_OUTBOX": str(outbox),
        "FLASK_MAIL_FROM": "welcome@kafka-tasks.test",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # Given the example's topics and tables, made with its Flask CLI, and its worker as a real process
    release = subprocess.run(
        [FLASK, "--app", EXAMPLE, "kafka-tasks", "release"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert release.returncode == 0, release.stdout + release.stderr
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen(
            [FLASK, "--app", EXAMPLE, "kafka-tasks", "worker", "--processes", "1", "--threads", "2"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # When the app's view is asked to sign someone up
        app = load_example().create_app()
        client = app.test_client()
        answer = client.post("/signup", json={"email": "ada@example.com"})
        assert answer.status_code == 202, answer.get_json()

        # Then the task succeeds, and the worker wrote the email with the app's configured sender
        def succeeded():
            return client.get(answer.headers["Location"]).get_json()["status"] == "succeeded"

        eventually(succeeded, timeout=60, what="the welcome task to succeed", progress=lambda: log_of(tmp_path))
        assert (outbox / "ada@example.com.txt").read_text().startswith("From: welcome@kafka-tasks.test\n")
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        assert worker.wait(30) == 0, log_of(tmp_path)
        app.extensions["kafka_tasks"].broker.close()


def log_of(tmp_path) -> str:
    return (tmp_path / "worker.log").read_text(errors="replace")[-3000:]


@pytest.mark.parametrize("command", ["worker", "release"])
def test_the_flask_cli_has_the_kafka_tasks_commands(command):
    shown = subprocess.run(
        [FLASK, "--app", EXAMPLE, "kafka-tasks", command, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and "Usage: flask kafka-tasks" in shown.stdout, shown.stdout + shown.stderr
