"""Shared fixtures: a real Apache Kafka broker for the whole test session, and the reference
system on Dramatiq's StubBroker for actor and gateway logic.

Every test that uses the ``kafka`` fixture (directly or through another fixture) carries the
``kafka`` marker, so ``pytest -m "not kafka"`` runs the unit tests alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from broker import devkafka

#: How long the session broker may take to start before the tests that need it fail.
KAFKA_START_TIMEOUT = 120


def reachable(bootstrap_servers: str) -> bool:
    """Tells whether a Kafka cluster answers metadata requests at the given address."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "logger": _quiet_logger()})
    try:
        return bool(admin.list_topics(timeout=5).brokers)
    except Exception:
        return False


def _quiet_logger():
    import logging

    logger = logging.getLogger("tests.librdkafka")
    logger.setLevel(logging.CRITICAL)
    return logger


def launch_kafka(*args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Starts ``kafka-tasks kafka`` with the given arguments and waits for its ready line.

    Returns:
      The launcher process and the line it printed when ready.

    Raises:
      RuntimeError: With the launcher's own error output (one line, with the broker's last error).
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "tasks.cli", "kafka", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + KAFKA_START_TIMEOUT
    line = process.stdout.readline()
    if "is ready at" not in line or time.monotonic() > deadline:
        process.terminate()
        try:
            _, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        raise RuntimeError(f"kafka-tasks kafka did not start:\n{line}{err}")
    return process, line


def stop_kafka(process: subprocess.Popen) -> None:
    """Stops a launcher started by :func:`launch_kafka` and waits for it to exit."""
    process.terminate()
    try:
        process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


@pytest.fixture(scope="session")
def kafka():
    """The bootstrap address of a running Kafka broker.

    Uses ``KAFKA_BOOTSTRAP_SERVERS`` when it is set and answers; otherwise starts
    ``kafka-tasks kafka --ephemeral`` on a free port for the session.  If the broker cannot start,
    every test that needs it fails with the launcher's error: none is skipped.
    """
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given and reachable(given):
        yield given
        return
    port = devkafka.free_port()
    try:
        process, _ = launch_kafka("--ephemeral", "--port", str(port))
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_kafka(process)


@pytest.fixture
def kafka_launcher():
    """:func:`launch_kafka` for a test that runs a Kafka of its own; what it launched is stopped after it."""
    launched: list[subprocess.Popen] = []

    def launch(*args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
        process, line = launch_kafka(*args, env=env)
        launched.append(process)
        return process, line

    yield launch
    for process in launched:
        if process.poll() is None:
            stop_kafka(process)


class OwnKafka:
    """A ``kafka-tasks kafka`` of a test's own, on a persistent data folder: stoppable, restartable,
    and freezable (its JVM stopped with SIGSTOP, as a broker that stalls without dying looks)."""

    def __init__(self, tmp_path, launch) -> None:
        self.launch = launch
        self.port = devkafka.free_port()
        self.data_dir = tmp_path / "kafka"
        self.bootstrap_servers = f"127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> None:
        self.process, _ = self.launch("--port", str(self.port), "--data-dir", str(self.data_dir))

    def stop(self) -> None:
        if self.process is not None:
            self.thaw()
            stop_kafka(self.process)
            self.process = None

    def _jvm(self) -> int:
        from tests.processes import children_of

        [jvm] = children_of(self.process.pid)
        return jvm

    def freeze(self) -> None:
        """Stops the broker's JVM where it is: connections stay open, and nothing answers."""
        os.kill(self._jvm(), signal.SIGSTOP)

    def thaw(self) -> None:
        """Lets a frozen broker go on."""
        os.kill(self._jvm(), signal.SIGCONT)


@pytest.fixture
def own_kafka(tmp_path, kafka_launcher):
    """A Kafka of the test's own (:class:`OwnKafka`), started, and stopped after the test."""
    kafka = OwnKafka(tmp_path, kafka_launcher)
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


#: The fixtures that give a test a real Kafka: such a test carries the ``kafka`` marker.
KAFKA_FIXTURES = frozenset({"kafka", "kafka_launcher"})


@pytest.fixture
def topic_name() -> str:
    """A topic name no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def queue_name() -> str:
    """A Dramatiq queue name no other test uses."""
    return f"q_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def queue_mode() -> str:
    """How the test's queue is consumed: ``classic`` (a consumer group), or ``share`` (a share
    group), for tests marked ``both_modes``, which run in both."""
    return "classic"


@pytest.fixture
def kafka_broker(kafka, queue_mode, queue_name):
    """A KafkaBroker on the session's Kafka, closed after the test; in ``share`` mode, its test
    queue is read by a share group (short record locks, for tests)."""
    from broker import KafkaBroker

    share = {"share_queues": {queue_name}, "share_lock_ms": 5_000} if queue_mode == "share" else {}
    broker = KafkaBroker(bootstrap_servers=kafka, partitions=4, commit_interval_ms=20, **share)
    yield broker
    broker.close()


@pytest.fixture
def worker(kafka_broker):
    """A started Dramatiq worker on the test's broker, stopped after the test."""
    import dramatiq

    worker = dramatiq.Worker(kafka_broker, worker_threads=8, worker_timeout=100)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def services(kafka, tmp_path):
    """The Procfile's processes on the session's Kafka, with what fault scenarios need
    (:class:`tests.services.Services`); stopped after the test."""
    from tests.services import Services

    with Services(kafka, tmp_path) as services:
        yield services


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server on a free loopback port, for the session
    (:class:`benchmarks.services.Postgres`, without fsync).

    Uses ``TEST_POSTGRES_URL`` when set.  If PostgreSQL is missing the tests that need it fail,
    saying how to install it.
    """
    if os.environ.get("TEST_POSTGRES_URL"):
        yield os.environ["TEST_POSTGRES_URL"]
        return
    from benchmarks.services import Postgres, ServiceUnavailable

    server = Postgres(fsync=False)
    try:
        url = server.start()
    except ServiceUnavailable as e:
        server.stop()
        pytest.fail(f"{e} (or set TEST_POSTGRES_URL)", pytrace=False)
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def stub_config(tmp_path):
    """The reference system's configuration for actor and gateway logic: Dramatiq's StubBroker, a
    fresh SQLite database, and short waits so that retry tests are quick."""
    from tasks.config import Config

    return Config(
        broker="stub",
        database_url=f"sqlite:///{tmp_path / 'kafka-tasks.db'}",
        get_user_timeout_ms=500,
        payments_min_backoff_ms=100,
        payments_max_backoff_ms=300,
        user_lookup_timeout_ms=2_000,
    )


@pytest.fixture
def stub_system(stub_config):
    """The reference system built on the StubBroker (``tasks.app.build_system``), with its schema,
    as Dramatiq's global broker; closed after the test."""
    import dramatiq

    from tasks.app import build_system

    built = build_system(stub_config)
    dramatiq.set_broker(built.broker)
    built.store.create_schema()
    yield built
    built.broker.close()
    built.store.engine.dispose()


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's ``chromium`` and ``chromium-driver``), driven with Selenium, with
    no network but loopback: a page that needs the internet fails here as it would offline."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail(
            "Chromium is not installed: apt-get install chromium chromium-driver (make test does)", pytrace=False
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        # Every host but loopback unknown: no CDN, no network.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='kafka-tasks-chromium-')}")
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def screenshots(request, tmp_path) -> Path:
    """Where a browser test keeps its screenshots: ``--screenshots DIR``, else a throwaway folder."""
    chosen = request.config.getoption("--screenshots")
    folder = Path(chosen) if chosen else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def served(stub_config):
    """Serves an app on a loopback port in this process, for a browser: ``served(app) -> base URL``."""
    import threading

    from werkzeug.serving import make_server

    servers = []

    def serve(app) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server in servers:
        server.shutdown()


def pytest_addoption(parser):
    parser.addoption(
        "--reliability-report",
        metavar="PATH",
        default=None,
        help="write the reliability scenarios' figures to PATH (make reliability writes docs/reliability.md)",
    )
    parser.addoption(
        "--screenshots",
        metavar="DIR",
        default=None,
        help="keep the browser tests' screenshots in DIR (make screenshots keeps them in docs/)",
    )


def pytest_generate_tests(metafunc):
    if metafunc.definition.get_closest_marker("both_modes"):
        metafunc.parametrize("queue_mode", ["classic", "share"])


def pytest_collection_modifyitems(config, items):
    for item in items:
        if KAFKA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)


def pytest_sessionfinish(session, exitstatus):
    from tests import reliability

    path = session.config.getoption("--reliability-report")
    if path:
        reliability.write(Path(path))
