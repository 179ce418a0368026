"""A local, single-node Apache Kafka for development and tests.

`kafka-tasks kafka` runs a real Apache Kafka broker (KRaft, combined broker and controller) on
loopback.  The server comes from ``KAFKA_HOME`` when that points at an unpacked Apache Kafka
distribution; otherwise its jars are fetched once with Maven, from the ``kafka-pom.xml`` shipped in
this package, into a cache folder, and every later start works offline.

The broker is configured for one node: every internal topic (consumer offsets, transactions,
share-group state) has replication factor 1 and min ISR 1, and share groups (KIP-932) are enabled.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .tenancy import Tenant

#: The Apache Kafka release the project pins; keep it in step with ``data/kafka-pom.xml``.
KAFKA_VERSION = "4.4.0"

#: Kafka 4 needs Java 17 or newer for the broker.
MIN_JAVA_VERSION = 17

#: Heap for the broker on a shared 2-core machine; override with ``KAFKA_HEAP_OPTS``.
DEFAULT_HEAP_OPTS = "-Xms256m -Xmx1g"

#: How long the broker may take to answer metadata requests before start-up is abandoned.
STARTUP_TIMEOUT = 90

#: How long a stopping broker gets after SIGTERM before it is killed.
SHUTDOWN_TIMEOUT = 30

logger = logging.getLogger(__name__)


class LocalKafkaError(Exception):
    """The local broker could not be started.  Its message is one line, meant for a user."""


#: The files ``kafka-tasks kafka --ssl-dir`` reads: the CA certificates whose client certificates
#: the broker accepts, the broker's certificate (chain) and its private key (unencrypted PKCS#8).
TLS_FILES = {"ca_pem": "ca.pem", "certificate_pem": "broker.pem", "key_pem": "broker.key"}


@dataclass(frozen=True)
class TLSListener:
    """An SSL listener that requires client certificates, as Heroku's brokers do.

    The PEM contents go into the broker's configuration as they are (``ssl.keystore.type=PEM``);
    Kafka hides them in its logs, and ``repr`` leaves them out.

    Parameters:
      port(int): The listener's port on 127.0.0.1.
      ca_pem(str): The CA certificates that sign the client certificates the broker accepts.
      certificate_pem(str): The broker's certificate, then any intermediates.
      key_pem(str): The broker's private key, unencrypted PKCS#8 (``BEGIN PRIVATE KEY``).
    """

    port: int
    ca_pem: str = field(repr=False)
    certificate_pem: str = field(repr=False)
    key_pem: str = field(repr=False)

    @classmethod
    def from_dir(cls, directory: Path, port: int) -> TLSListener:
        """Reads ``ca.pem``, ``broker.pem`` and ``broker.key`` from a folder.

        Raises:
          LocalKafkaError: If a file is missing or holds no PEM data of the right kind.
        """
        contents = {}
        for name, filename in TLS_FILES.items():
            path = Path(directory) / filename
            try:
                contents[name] = path.read_text()
            except (OSError, UnicodeDecodeError) as e:
                raise LocalKafkaError(f"cannot read {path} for the TLS listener: {e.strerror or e}") from None
            expected = "-----BEGIN PRIVATE KEY-----" if name == "key_pem" else "-----BEGIN CERTIFICATE-----"
            if expected not in contents[name]:
                kind = "an unencrypted PKCS#8 private key" if name == "key_pem" else "PEM certificates"
                raise LocalKafkaError(f"{path} must hold {kind} ({expected})")
        return cls(port=port, **contents)

    def properties(self) -> dict[str, str]:
        """Returns the broker settings of the listener's TLS."""
        return {
            "ssl.client.auth": "required",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.certificate.chain": self.certificate_pem.strip(),
            "ssl.keystore.key": self.key_pem.strip(),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.certificates": self.ca_pem.strip(),
        }


@dataclass(frozen=True)
class BrokerConfig:
    """The settings that make a single-node KRaft broker.

    Parameters:
      port(int): The client listener's port on 127.0.0.1.
      controller_port(int): The KRaft controller listener's port on 127.0.0.1.
      data_dir(Path): Where the broker keeps its log segments and metadata.
      tls(TLSListener|None): An SSL listener for clients, besides the plaintext one, which the
        controller and the broker itself keep using.
      tenant(Tenant|None): Authorization as on a multi-tenant plan (see :mod:`broker.tenancy`).
    """

    port: int
    controller_port: int
    data_dir: Path
    tls: TLSListener | None = None
    tenant: Tenant | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def properties(self) -> dict[str, str]:
        """Returns the broker's ``server.properties`` as a mapping."""
        properties = self._plaintext_properties()
        if self.tls is not None:
            ssl = f"SSL://127.0.0.1:{self.tls.port}"
            properties["listeners"] += f",{ssl}"
            properties["advertised.listeners"] += f",{ssl}"
            properties["listener.security.protocol.map"] += ",SSL:SSL"
            properties.update(self.tls.properties())
        if self.tenant is not None:
            properties.update(self.tenant.broker_properties())
        return properties

    def _plaintext_properties(self) -> dict[str, str]:
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            # Static voters keep the controller's address out of the stored metadata, so a
            # restart may pick another controller port.
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "share.coordinator.state.topic.num.partitions": "4",
            "group.coordinator.rebalance.protocols": "classic,consumer,share",
            "group.initial.rebalance.delay.ms": "0",
            # A crashed worker's partitions move to the survivors within seconds, not 45 s.
            "group.consumer.min.session.timeout.ms": "3000",
            "group.consumer.session.timeout.ms": "10000",
            "group.consumer.min.heartbeat.interval.ms": "500",
            "group.consumer.heartbeat.interval.ms": "1000",
            "group.min.session.timeout.ms": "3000",
            "log.retention.check.interval.ms": "60000",
        }

    def render(self) -> str:
        """Returns the properties in Java's ``.properties`` format (PEM values on one line)."""
        return "".join(f"{key}={_escape(value)}\n" for key, value in self.properties().items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\r", "").replace("\n", "\\n")


def cache_dir() -> Path:
    """Returns the folder that holds fetched Kafka jars (``KAFKA_TASKS_CACHE`` overrides it)."""
    if os.environ.get("KAFKA_TASKS_CACHE"):
        return Path(os.environ["KAFKA_TASKS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kafka-tasks"


def find_java() -> str:
    """Returns the path of a ``java`` that is new enough for Kafka.

    Raises:
      LocalKafkaError: If no java is found, or it is older than Java 17.
    """
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        where = f"JAVA_HOME={java_home}" if java_home else "PATH"
        raise LocalKafkaError(f"Java {MIN_JAVA_VERSION}+ is required to run Kafka, and no java was found in {where}")
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError) as e:
        raise LocalKafkaError(f"could not run {java}: {e}") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise LocalKafkaError(f"could not tell the version of {java}")
    major = int(match.group(1))
    if major == 1:  # "1.8.0" style versions
        major = int(match.group(2) or 0)
    if major < MIN_JAVA_VERSION:
        raise LocalKafkaError(f"Java {MIN_JAVA_VERSION}+ is required to run Kafka, but {java} is Java {major}")
    return java


def kafka_classpath() -> str:
    """Returns the broker's Java classpath: ``$KAFKA_HOME/libs`` or the cached Maven jars.

    Raises:
      LocalKafkaError: If neither is available.
    """
    kafka_home = os.environ.get("KAFKA_HOME")
    if kafka_home:
        libs = Path(kafka_home) / "libs"
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise LocalKafkaError(
                f"KAFKA_HOME={kafka_home} is not an unpacked Apache Kafka distribution (no libs/kafka_2.13-*.jar)"
            )
        return f"{libs}/*"
    return f"{fetch_jars()}/*"


def fetch_jars() -> Path:
    """Fetches the pinned Kafka jars with Maven unless they are cached, and returns their folder.

    Raises:
      LocalKafkaError: If the jars are not cached and Maven is missing or fails.
    """
    libs = cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"
    if (libs / ".complete").exists():
        return libs
    mvn = shutil.which("mvn")
    if not mvn:
        raise LocalKafkaError(
            f"Maven (mvn) is needed once to fetch Apache Kafka {KAFKA_VERSION}, and no jars are cached in "
            f"{libs.parent}; install Maven, or set KAFKA_HOME to an unpacked Kafka"
        )
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    pom = resources.files("broker") / "data" / "kafka-pom.xml"
    with resources.as_file(pom) as pom_path:
        command = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom_path),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        print(f"Fetching Apache Kafka {KAFKA_VERSION} with Maven (once) ...", file=sys.stderr)
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        last = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
        raise LocalKafkaError(f"Maven could not fetch Apache Kafka {KAFKA_VERSION}: {last[0]}")
    (staging / ".complete").touch()
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    return libs


def check_port_free(port: int) -> None:
    """Raises LocalKafkaError if something already listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise LocalKafkaError(
                f"port {port} on 127.0.0.1 is already in use; stop what uses it or pass --port"
            ) from None


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Asks Linux to SIGTERM the broker if the launcher dies, so no JVM is ever orphaned."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class LocalKafka:
    """A single-node Apache Kafka broker run as a child process.

    Parameters:
      port(int): The client port on 127.0.0.1 (9092 by default).
      data_dir(Path|None): The persistent data folder; ``None`` means a throwaway one.
      tls(TLSListener|None): An SSL listener requiring client certificates, besides plaintext.
      tenant(Tenant|None): Authorization as on a multi-tenant plan: the tenant's certificate may
        use only its prefix's topics and groups, and create none (it needs ``tls``).
    """

    def __init__(
        self,
        *,
        port: int = 9092,
        data_dir: Path | None = None,
        tls: TLSListener | None = None,
        tenant: Tenant | None = None,
    ) -> None:
        if tenant is not None and tls is None:
            raise LocalKafkaError("a tenant is known by its client certificate: it needs a TLS listener (--ssl-dir)")
        self.port = port
        self.tls = tls
        self.tenant = tenant
        self.ephemeral = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="kafka-tasks-")) if data_dir is None else Path(data_dir)
        self.log_file = self.data_dir / "server.log"
        self.process: subprocess.Popen | None = None
        #: Where this run's lines start in the log.
        self._log_offset = 0

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Formats the data folder if it is new, starts the broker and waits until it answers.

        Raises:
          LocalKafkaError: If Java, the jars or the port are missing, or the broker fails to start.
        """
        check_port_free(self.port)
        if self.tls is not None:
            check_port_free(self.tls.port)
        java = find_java()
        classpath = kafka_classpath()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = BrokerConfig(
            port=self.port,
            controller_port=free_port(),
            data_dir=self.data_dir.resolve(),
            tls=self.tls,
            tenant=self.tenant,
        )
        properties = self.data_dir / "server.properties"
        properties.touch(mode=0o600)  # It may hold the broker's private key.
        properties.chmod(0o600)
        properties.write_text(config.render())
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text((resources.files("broker") / "data" / "log4j2.properties").read_text())
        jvm = [
            java,
            *os.environ.get("KAFKA_HEAP_OPTS", DEFAULT_HEAP_OPTS).split(),
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.file={self.log_file}",
            "-cp",
            classpath,
        ]
        if not (config.data_dir / "logs" / "meta.properties").exists():
            self._format(jvm, properties)
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.data_dir / "stdout.log", "ab") as out:
            self.process = subprocess.Popen(
                [*jvm, "kafka.Kafka", str(properties)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        self._wait_until_ready()
        if self.tenant is not None:
            self._grant(self.tenant)

    def _grant(self, tenant: Tenant) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})  # the plaintext listener: a super user
        try:
            tenant.grant(admin)
        except KafkaException as e:
            self.stop()
            raise LocalKafkaError(f"could not grant the tenant's ACLs: {e.args[0].str()}") from None

    def _format(self, jvm: list[str], properties: Path) -> None:
        command = [
            *jvm,
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            new_cluster_id(),
            "--config",
            str(properties),
            "--feature",
            "share.version=1",
            "--ignore-formatted",
        ]
        result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            last = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
            raise LocalKafkaError(f"could not format {self.data_dir}: {last[0]}")

    def _wait_until_ready(self) -> None:
        from confluent_kafka.admin import AdminClient

        quiet = logging.getLogger("broker.devkafka.librdkafka")
        quiet.setLevel(logging.CRITICAL)
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "logger": quiet})
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.last_error()
                raise LocalKafkaError(
                    f"the broker exited with status {self.process.returncode}"
                    + (f" ({error})" if error else "")
                    + f"; see {self.log_file}"
                )
            try:
                if admin.list_topics(timeout=1).brokers:
                    return
            except Exception:  # KafkaException while the listener is not up yet
                time.sleep(0.1)
        self.stop()
        error = self.last_error()
        raise LocalKafkaError(
            f"the broker did not answer within {STARTUP_TIMEOUT}s"
            + (f" ({error})" if error else "")
            + f"; see {self.log_file}"
        )

    def stop(self) -> None:
        """Stops the broker with SIGTERM, kills it if it hangs, and drops a throwaway data folder."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.ephemeral:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def last_error(self) -> str | None:
        """The last ERROR or FATAL line the broker logged in this run (a persistent folder's log
        also holds earlier runs'), cut to one short line; ``None`` if there is none."""
        try:
            with open(self.log_file, "rb") as log:
                log.seek(self._log_offset)
                lines = log.read().decode(errors="replace").splitlines()
        except OSError:
            return None
        errors = [line for line in lines if " ERROR " in line or " FATAL " in line]
        return errors[-1].strip()[:300] if errors else None


def uuid_to_kafka_id(value: uuid.UUID) -> str:
    """Returns a UUID in Kafka's cluster-id form: URL-safe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(value.bytes).decode().rstrip("=")


def new_cluster_id(uuids=uuid.uuid4) -> str:
    """Returns a fresh cluster id that does not start with "-", as Kafka's ``Uuid.randomUuid``
    does: ``kafka-storage format --cluster-id -…`` takes such an id for an option (1 in 64).

    Parameters:
      uuids(callable): Where the random UUIDs come from.
    """
    while True:
        cluster_id = uuid_to_kafka_id(uuids())
        if not cluster_id.startswith("-"):
            return cluster_id


def run(*, port: int, data_dir: Path | None, tls: TLSListener | None = None, tenant: Tenant | None = None) -> int:
    """Runs the broker in the foreground until SIGINT or SIGTERM.

    Returns:
      int: The process exit status.
    """
    try:
        kafka = LocalKafka(port=port, data_dir=data_dir, tls=tls, tenant=tenant)
    except LocalKafkaError as e:
        print(f"kafka-tasks kafka: error: {e}", file=sys.stderr)
        return 2
    stopping = False

    def request_stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    started = time.monotonic()
    try:
        kafka.start()
    except LocalKafkaError as e:
        # One line, which names the log when the broker itself failed: the folder's log may be an
        # earlier run's, which has nothing to do with this error.
        kafka.stop()
        print(f"kafka-tasks kafka: error: {e}", file=sys.stderr)
        return 1
    ssl = "" if tls is None else f", TLS with client certificates at 127.0.0.1:{tls.port}"
    if tenant is not None:
        ssl += f" (tenant {tenant.principal!r}: topics and groups under {tenant.prefix!r}, no creation)"
    print(
        f"Kafka {KAFKA_VERSION} is ready at {kafka.bootstrap_servers}{ssl} "
        f"(started in {time.monotonic() - started:.1f}s; data {kafka.data_dir}; log {kafka.log_file})",
        flush=True,
    )
    try:
        while not stopping and kafka.process.poll() is None:
            time.sleep(0.2)
        if kafka.process.poll() is not None and not stopping:
            print(
                f"kafka-tasks kafka: error: the broker exited with status {kafka.process.returncode}", file=sys.stderr
            )
            kafka.stop()
            return 1
    finally:
        kafka.stop()
    print("Kafka stopped.", flush=True)
    return 0
