"""What a platform installs and runs: the lock file a buildpack reads, kept in step with setup.cfg,
and a dyno simulated for real: the app installed from the lock file alone, release and the
Procfile's lines run verbatim with Heroku's variables, on a Kafka that behaves as a multi-tenant plan
(TLS with client certificates, ACLs on the tenant's prefix, no topic creation) and PostgreSQL."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from broker import KafkaSettings, devkafka
from tests.certificates import Authority, broker_ssl_dir
from tests.eventually import eventually
from tests.system import ROOT, System, call, procfile
from tests.test_reliability_tls import refused_send

#: The command that compiles the lock file, as its header names it.
COMPILE = "uv pip compile requirements.in --python-version 3.11 -o requirements.txt"


def test_the_lock_file_is_what_setup_cfg_asks_for(tmp_path):
    # Given the lock file compiled again from setup.cfg's requirements, keeping the versions it pins
    recompiled = tmp_path / "requirements.txt"
    shutil.copy(ROOT / "requirements.txt", recompiled)
    uv = str(Path(sys.executable).parent / "uv")
    command = [uv, "pip", "compile", "requirements.in", "--python-version", "3.11", "-o", str(recompiled), "-q"]
    result = subprocess.run(
        [*command, "--custom-compile-command", COMPILE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    # Then nothing changes: a requirement added to setup.cfg and not to the lock file shows here
    assert recompiled.read_text() == (ROOT / "requirements.txt").read_text(), f"run `{COMPILE}` and commit it"


def test_the_platform_runs_the_python_the_project_is_tested_on():
    assert (ROOT / ".python-version").read_text().strip() == f"{sys.version_info.major}.{sys.version_info.minor}"


# A dyno, simulated: the app installed from the lock file, on a multi-tenant Kafka over TLS -------


#: The tenant's prefix, as Heroku names one (prepended with no separator).
PREFIX = "tenant-4711."

#: The tenant's client certificate subject, and the principal Kafka makes of it.
TENANT = "CN=kafka-tasks tenant"


def app_copy(destination: Path) -> Path:
    """Copies the app as a platform receives it: the files git would push (tracked, or new and not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


@pytest.fixture(scope="module")
def dyno(tmp_path_factory) -> tuple[Path, Path]:
    """The app's folder and a fresh virtual environment with the app installed from the lock file
    only (``pip install -r requirements.txt``, every dependency pinned there), as a buildpack builds it."""
    root = tmp_path_factory.mktemp("dyno")
    app = app_copy(root / "app")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    # --no-deps: a dependency the lock file lacks is then missing, and `pip check` says so.
    install = subprocess.run(
        [*pip, "install", "--no-deps", "-r", "requirements.txt"], cwd=app, capture_output=True, text=True, timeout=600
    )
    assert install.returncode == 0, install.stdout + install.stderr
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, f"the lock file is not complete: {check.stdout}{check.stderr}"
    return app, venv


def create_as_the_platform(admin, commands: list[str]) -> list[str]:
    """Does what the Heroku CLI commands ``release`` printed would do, with an admin client: each
    ``kafka:topics:create`` makes its topic (under the tenant's prefix) as it says.

    Returns:
      The topics it made.
    """
    from confluent_kafka.admin import NewTopic

    units = {"minutes": 60_000, "hours": 3_600_000, "days": 86_400_000}
    topics = []
    for command in commands:
        created = re.fullmatch(
            r"heroku kafka:topics:create (\S+) --partitions (\d+)(?: --retention-time '(\d+) (\w+)')?( --compaction)?",
            command,
        )
        if created is None:
            assert re.fullmatch(r"heroku kafka:consumer-groups:create \S+", command), command
            continue  # the tenant's ACLs already cover its prefix's groups
        name, partitions, amount, unit, compaction = created.groups()
        config = {} if amount is None else {"retention.ms": str(int(amount) * units[unit])}
        if compaction:
            config["cleanup.policy"] = "compact,delete"
        topics.append(NewTopic(PREFIX + name, num_partitions=int(partitions), config=config))
    for future in admin.create_topics(topics, operation_timeout=30).values():
        future.result(60)
    return [topic.topic for topic in topics]


def test_a_dyno_runs_the_procfile_on_a_multi_tenant_kafka_over_tls(dyno, kafka_launcher, postgres_server, tmp_path):
    import sqlalchemy as sa
    from confluent_kafka import Consumer, KafkaError
    from confluent_kafka.admin import AdminClient

    app, venv = dyno
    # Given a Kafka that behaves as a multi-tenant plan: TLS with client certificates, and a
    # tenant certificate that may use only its prefix's topics and groups, and create none
    authority = Authority("kafka-tasks test CA")
    ssl_dir = broker_ssl_dir(authority, tmp_path / "ssl")
    client_cert, client_key = authority.issue(TENANT.removeprefix("CN="), server=False)
    port, ssl_port = devkafka.free_port(), devkafka.free_port()
    _, ready = kafka_launcher(
        "--port", str(port), "--ephemeral", "--ssl-dir", str(ssl_dir), "--ssl-port", str(ssl_port),
        "--tenant-prefix", PREFIX, "--tenant-principal", TENANT,
    )  # fmt: skip
    assert f"tenant {TENANT!r}" in ready, ready
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})  # the platform's own way in
    # And a database of its own on PostgreSQL, given as Heroku gives it
    engine = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text("CREATE DATABASE dyno"))
    engine.dispose()
    database = postgres_server.replace("postgresql+psycopg://", "postgres://").rsplit("/", 1)[0] + "/dyno"

    # And the Procfile's processes, from the dyno's virtual environment, with Heroku's variables
    system = System("127.0.0.1:1", tmp_path, root=app)  # the plaintext address leads nowhere
    system.env.update(
        {
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "KAFKA_URL": f"kafka+ssl://127.0.0.1:{ssl_port}",
            "KAFKA_TRUSTED_CERT": authority.pem,
            "KAFKA_CLIENT_CERT": client_cert,
            "KAFKA_CLIENT_CERT_KEY": client_key,
            "KAFKA_PREFIX": PREFIX,
            "DATABASE_URL": database,
            "WEB_CONCURRENCY": "2",
        }
    )
    try:
        # When release runs where the tenant may not create topics
        first = system.release()
        # Then it fails, naming each missing topic and printing the commands that make them
        assert first.returncode != 0, first.stdout + first.stderr
        assert f"missing Kafka topics: {PREFIX}auth" in first.stderr, first.stderr
        commands = [line.strip() for line in first.stdout.splitlines() if line.strip().startswith("heroku ")]
        assert "heroku kafka:topics:create auth --partitions 4" in commands, first.stdout
        assert "heroku kafka:consumer-groups:create payments" in commands, first.stdout

        # When the platform's admin runs them, and release runs again
        made = create_as_the_platform(admin, commands)
        second = system.release()
        # Then every topic release needs exists, and the schema is made
        assert second.returncode == 0, second.stdout + second.stderr
        assert {f"{PREFIX}auth", f"{PREFIX}payments.XQ", f"{PREFIX}dramatiq-results"} <= set(made)

        # When the web, auth, payments and clock dynos start, and a user signs up and pays
        system.start_processes()
        status, body, _ = call("POST", f"{system.base}/api/auth/sign-up", {"name": "Ada", "email": "ada@example.com"})
        assert status == 202, body
        user = system.wait_for(body["taskId"], "succeeded", "failed", "dead")
        assert user["status"] == "succeeded", user
        payment = {"userId": user["result"]["id"], "amount": "42.00", "currency": "EUR"}
        status, body, _ = call("POST", f"{system.base}/api/payments/pay", payment, {"Idempotency-Key": "order-1"})
        assert status == 202, body
        paid = system.wait_for(body["taskId"], "succeeded", "failed", "dead")
        # Then both succeed, and the payment is in PostgreSQL
        assert paid["status"] == "succeeded", paid
        engine = sa.create_engine(database.replace("postgres://", "postgresql+psycopg://"))
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT count(*) FROM payments")).scalar() == 1
        engine.dispose()

        # When the tenant's certificate reaches for a topic outside its prefix
        settings = KafkaSettings.from_env({k: system.env[k] for k in system.env if k.startswith("KAFKA_")})
        error, _ = refused_send(settings, "tenant-other.auth")
        reader = Consumer({**settings.client_config(), "group.id": f"{PREFIX}reader", "auto.offset.reset": "earliest"})
        try:
            reader.subscribe(["tenant-other.auth"])
            errors = []
            eventually(
                lambda: (record := reader.poll(0.5)) is not None and record.error() is not None
                and errors.append(record.error().code()) is None,
                timeout=30,
                what="the broker to refuse the topic outside the prefix",
            )  # fmt: skip
        finally:
            reader.close()
        # Then it is refused: Kafka did not take the record, and reading is not authorized
        assert "Kafka did not acknowledge" in error, error
        assert errors == [KafkaError.TOPIC_AUTHORIZATION_FAILED]

        # When the platform stops every dyno: SIGTERM to each process group, SIGKILL 30 s later
        for name in system.processes:
            os.killpg(system.processes[name].pid, signal.SIGTERM)
        # Then each drains and exits in time, cleanly
        for name in system.processes:
            assert system.processes[name].wait(30) == 0, system.log(name)
        assert "Worker process stopped." in system.log("payments")
        assert "Clock stopped." in system.log("clock")
    finally:
        system.stop()


def test_app_json_runs_the_procfiles_processes_and_sets_only_known_variables():
    import json

    from tasks.config import VARIABLES

    app = json.loads((ROOT / "app.json").read_text())
    processes = set(procfile()) - {"release"}
    # Then its formation is the Procfile's processes, and every variable it sets is one the app reads, with its default
    assert set(app["formation"]) == processes
    known = {variable.name: variable for variable in VARIABLES}
    for name, setting in app["env"].items():
        assert name in known, name
        assert setting.get("value", known[name].default) == known[name].default, name
