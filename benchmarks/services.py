"""The servers the benchmarks talk to, run as child processes on free loopback ports.

Kafka comes from ``broker.devkafka.LocalKafka`` (ephemeral) unless ``KAFKA_BOOTSTRAP_SERVERS`` is
set.  Redis, RabbitMQ and PostgreSQL are Debian's ``redis-server``, ``rabbitmq-server`` and
``postgresql``, each with its data in a temporary folder; when one is missing or fails to start,
the figures that need it are reported as unavailable instead of failing the run.  The tests start
their PostgreSQL with :class:`Postgres` too.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from broker.devkafka import LocalKafka, free_port

from . import procs

#: The RabbitMQ server script itself: Debian's /usr/sbin wrapper would switch to the rabbitmq user.
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"

#: How long RabbitMQ may take to boot (it takes about 10 s on a 2-core machine).
RABBITMQ_START_TIMEOUT = 60


class ServiceUnavailable(Exception):
    """A server could not be started; the message says why, in one line."""


def _wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServiceUnavailable(f"exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise ServiceUnavailable(f"did not listen on port {port} within {timeout:.0f}s")


def _stop(process: subprocess.Popen | None, timeout: float = 20) -> None:
    """Stops a child started in a session of its own, with everything it started."""
    if process is not None:
        procs.stop(process, timeout)


class Kafka:
    """The Kafka cluster: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a throwaway local broker."""

    def __init__(self) -> None:
        self.local: LocalKafka | None = None
        self.bootstrap_servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")

    def start(self) -> str:
        if not self.bootstrap_servers:
            self.local = LocalKafka(port=free_port())
            self.local.start()
            self.bootstrap_servers = self.local.bootstrap_servers
        return self.bootstrap_servers

    @property
    def pid(self) -> int | None:
        """The local broker's process, if Kafka is local."""
        process = self.local.process if self.local is not None else None
        return process.pid if process is not None else None

    def stop(self) -> None:
        if self.local is not None:
            self.local.stop()


class Redis:
    """``redis-server`` without persistence, on a free port."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "redis"
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> str:
        server = shutil.which("redis-server")
        if not server:
            raise ServiceUnavailable("redis-server is not installed (apt-get install redis-server)")
        self.dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        with open(self.dir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    server,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.dir),
                    "--daemonize",
                    "no",
                    "--loglevel",
                    "warning",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_for_port(port, 20, self.process)
        self.url = f"redis://127.0.0.1:{port}/0"
        return self.url

    def stop(self) -> None:
        _stop(self.process)


class Rabbitmq:
    """``rabbitmq-server`` with its own node name, ports, epmd and data folder."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "rabbitmq"
        self.epmd: subprocess.Popen | None = None
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> str:
        epmd = shutil.which("epmd")
        if not os.access(RABBITMQ_SERVER, os.X_OK) or not epmd:
            raise ServiceUnavailable("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "enabled_plugins").write_text("[].\n")
        port, dist_port, epmd_port = free_port(), free_port(), free_port()
        env = {
            **os.environ,
            "HOME": str(self.dir),  # where the Erlang cookie goes
            "ERL_EPMD_PORT": str(epmd_port),
            "RABBITMQ_NODENAME": f"bench-{uuid.uuid4().hex[:8]}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
        }
        with open(self.dir / "server.log", "ab") as log:
            # Our own epmd, in the foreground, so that stopping it is ours to do.
            self.epmd = subprocess.Popen(
                [epmd, "-port", str(epmd_port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.process = subprocess.Popen(
                [RABBITMQ_SERVER],
                cwd=self.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_for_port(port, RABBITMQ_START_TIMEOUT, self.process)
        except ServiceUnavailable as e:
            self.stop()
            raise ServiceUnavailable(f"rabbitmq-server {e}; see {self.dir / 'server.log'}") from None
        self.url = f"amqp://guest:guest@127.0.0.1:{port}/%2F"
        return self.url

    def stop(self) -> None:
        _stop(self.process, timeout=30)
        _stop(self.epmd, timeout=5)


class Postgres:
    """A throwaway PostgreSQL server (Debian's binaries) on a free loopback port.

    PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user, in a folder
    outside any private temporary folder that user could not enter.

    Parameters:
      fsync(bool): Whether the server syncs its writes to disk: a deployment does; the tests,
        which lose nothing by a crash of the machine, need not.
    """

    def __init__(self, *, fsync: bool = True) -> None:
        self.fsync = fsync
        self.dir: Path | None = None
        self.url = ""

    @staticmethod
    def binaries() -> Path | None:
        """The folder of the newest installed PostgreSQL's ``initdb`` and ``pg_ctl``, if any."""
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        return found[-1].parent if found else None

    def _run(self, *command: str) -> None:
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise ServiceUnavailable(
                f"{Path(command[0]).name} failed: {(result.stdout + result.stderr).strip()[-300:]}"
            )

    def start(self) -> str:
        """Starts the server; returns its SQLAlchemy URL (database ``postgres``, user ``tasks``).

        Raises:
          ServiceUnavailable: If PostgreSQL is not installed or does not start.
        """
        bin_dir = self.binaries()
        if bin_dir is None:
            raise ServiceUnavailable("PostgreSQL is not installed (apt-get install postgresql)")
        self.dir = Path(tempfile.mkdtemp(prefix="kafka-tasks-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        port = free_port()
        self._run(str(bin_dir / "initdb"), "-D", str(self.dir / "db"), "-U", "tasks", "--auth=trust", "-E", "UTF8")
        options = f"-p {port} -k {self.dir} -c listen_addresses=127.0.0.1" + ("" if self.fsync else " -c fsync=off")
        self._run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(self.dir / "db"),
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
            "-o",
            options,
        )
        self.url = f"postgresql+psycopg://tasks@127.0.0.1:{port}/postgres"
        return self.url

    def stop(self) -> None:
        if self.dir is None:
            return
        if self.url:
            bin_dir = self.binaries()
            try:
                self._run(str(bin_dir / "pg_ctl"), "-D", str(self.dir / "db"), "-m", "fast", "-w", "stop")
            except ServiceUnavailable:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir, self.url = None, ""


class Services:
    """Kafka, Redis, RabbitMQ and PostgreSQL for one benchmark session.

    Parameters:
      redis(bool), rabbitmq(bool): Whether to start them at all.
    """

    def __init__(self, *, redis: bool = True, rabbitmq: bool = True, postgres: bool = True) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="kafka-tasks-bench-"))
        self.kafka = Kafka()
        self.redis = Redis(self.workdir) if redis else None
        self.rabbitmq = Rabbitmq(self.workdir) if rabbitmq else None
        self.postgres = Postgres() if postgres else None
        self.errors: dict[str, str] = {}
        self.urls: dict[str, str] = {}

    def start(self) -> None:
        """Starts Kafka (failing if it cannot), then the baselines' servers (noting why not)."""
        self.urls["kafka"] = self.kafka.start()
        for name, service in (("redis", self.redis), ("rabbitmq", self.rabbitmq), ("postgres", self.postgres)):
            if service is None:
                self.errors[name] = "not started (smoke mode)"
                continue
            try:
                self.urls[name] = service.start()
            except (ServiceUnavailable, OSError) as e:
                self.errors[name] = str(e)

    def stop(self) -> None:
        for service in (self.postgres, self.rabbitmq, self.redis):
            if service is not None:
                service.stop()
        self.kafka.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Services:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
