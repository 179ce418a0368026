"""tasks.app: the reference system is wired by one function, and importing it does nothing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from tasks.app import build_system, current_system
from tasks.auth import create_user
from tasks.config import Config

#: Imports every module of the reference system, then tells what the process holds.
PROBE = textwrap.dedent("""
    import json, os
    import dramatiq
    import tasks.app, tasks.auth, tasks.payments, tasks.maintenance, tasks.release, tasks.cli
    import gateway, gateway.auth, gateway.payments, gateway.users, gateway.statuses, gateway.health
    print(json.dumps({
        "threads": len(os.listdir("/proc/self/task")),
        "broker": repr(dramatiq.broker.global_broker),
        "actors": sorted(tasks.app.actors._actors),
        "schedules": [schedule.name for schedule in tasks.app.schedules],
    }))
""")


def test_importing_the_reference_system_builds_nothing_connects_nowhere_and_reads_no_variable():
    # Given a Kafka address that records every connection, and variables that fail when read
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{listener.getsockname()[1]}",
        "KAFKA_SECURITY_PROTOCOL": "not-a-protocol",
        "DATABASE_URL": "mysql://nowhere/none",
        "GET_USER_TIMEOUT_MS": "not-a-number",
        "KAFKA_TASKS_BROKER": "kafka",
    }

    # When every module is imported
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)

    # Then the import succeeded with one thread, no broker and nothing read, and nobody connected
    assert out.returncode == 0, out.stderr
    held = json.loads(out.stdout)
    assert held == {
        "threads": 1,
        "broker": "None",
        "actors": ["create_user", "forget_abandoned_keys", "get_user", "process_payment"],
        "schedules": ["forget abandoned keys"],
    }
    with pytest.raises(BlockingIOError):
        listener.accept()
    listener.close()


def test_the_system_binds_its_actors_with_the_configured_backoff(stub_config):
    built = build_system(stub_config)
    payment = built.broker.get_actor("process_payment")
    assert (payment.options["min_backoff"], payment.options["max_backoff"]) == (100, 300)
    assert set(built.broker.actors) == {"create_user", "forget_abandoned_keys", "get_user", "process_payment"}
    assert built.actor(create_user) is built.broker.get_actor("create_user")


def test_each_broker_runs_its_actors_with_its_own_system(tmp_path):
    import dramatiq

    # Given two systems in one process, each with its own database
    systems = [build_system(Config(broker="stub", database_url=f"sqlite:///{tmp_path / f'{n}.db'}")) for n in (1, 2)]
    for built in systems:
        built.store.create_schema()
    # When the first one's worker runs a sign-up
    first = systems[0]
    worker = dramatiq.Worker(first.broker, worker_threads=1)
    worker.start()
    try:
        first.actor(create_user).send({"name": "Ada", "email": "ada@example.com"})
        first.broker.join("auth")
    finally:
        worker.stop()
    # Then the user is in the first one's database only
    assert first.store.get_user(1)["name"] == "Ada"
    assert systems[1].store.get_user(1) is None


def test_an_actor_called_outside_a_message_is_told_why_it_has_no_system():
    with pytest.raises(RuntimeError, match="build_system"):
        current_system()
