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
    node_id: int = 1
    roles: str = "broker,controller"
    voters: str | None = None
    replication: int = 1

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def properties(self) -> dict[str, str]:
        """Returns the node's ``server.properties`` as a mapping."""
        if self.roles == "controller":
            return self._controller_properties()
        properties = self._plaintext_properties()
        if self.roles == "broker":
            properties.update(
                {
                    "process.roles": "broker",
                    "listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
                    # A broker that stops answering is fenced, and its partitions led by others, in seconds.
                    "broker.session.timeout.ms": "3000",
                    "broker.heartbeat.interval.ms": "1000",
                }
            )
        if self.tls is not None:
            ssl = f"SSL://127.0.0.1:{self.tls.port}"
            properties["listeners"] += f",{ssl}"
            properties["advertised.listeners"] += f",{ssl}"
            properties["listener.security.protocol.map"] += ",SSL:SSL"
            properties.update(self.tls.properties())
        if self.tenant is not None:
            properties.update(self.tenant.broker_properties())
        return properties

    def _voters(self) -> str:
        # Static voters keep the controller's address out of the stored metadata, so a restart
        # may pick another controller port.
        return self.voters or f"{self.node_id}@127.0.0.1:{self.controller_port}"

    def _controller_properties(self) -> dict[str, str]:
        # The controller creates topics: the cluster's defaults for them are its settings.
        return {
            "process.roles": "controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self._voters(),
            "listeners": f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "broker.session.timeout.ms": "3000",
            "num.partitions": "1",
            "default.replication.factor": str(self.replication),
            "min.insync.replicas": str(max(1, self.replication - 1)),
        }

    def _plaintext_properties(self) -> dict[str, str]:
        # Internal topics, and topics made with the cluster's default, have every replica the
        # cluster can give (up to 3) and need all but one in sync to take a write.
        replicas, in_sync = str(self.replication), str(max(1, self.replication - 1))
        return {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self._voters(),
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "default.replication.factor": replicas,
            "min.insync.replicas": in_sync,
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": in_sync,
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": in_sync,
            "share.coordinator.state.topic.num.partitions": "4",
            # Share groups (broker.share) may lock records for as little as a second, for tests, and
            # get their assignments, and lose a crashed member, in seconds, as consumer groups do.
            "group.share.min.record.lock.duration.ms": "1000",
            "group.share.min.heartbeat.interval.ms": "500",
            "group.share.heartbeat.interval.ms": "1000",
            "group.share.min.session.timeout.ms": "3000",
            "group.share.session.timeout.ms": "10000",
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


class _Node:
    """One Kafka process (a combined node, a broker or a controller) on a data folder of its own.

    Parameters:
      config(BrokerConfig): Its settings.
      heap(str): Its JVM heap options.
    """

    def __init__(self, config: BrokerConfig, heap: str) -> None:
        self.config = config
        self.heap = heap
        self.data_dir = config.data_dir
        self.log_file = self.data_dir / "server.log"
        self.process: subprocess.Popen | None = None
        #: Where this run's lines start in the log.
        self._log_offset = 0

    def prepare(self) -> list[str]:
        """Writes the node's configuration; returns the JVM command up to the main class.

        Raises:
          LocalKafkaError: If Java or the jars are missing.
        """
        java = find_java()
        classpath = kafka_classpath()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        properties = self.data_dir / "server.properties"
        properties.touch(mode=0o600)  # It may hold the broker's private key.
        properties.chmod(0o600)
        properties.write_text(self.config.render())
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text((resources.files("broker") / "data" / "log4j2.properties").read_text())
        return [
            java,
            *self.heap.split(),
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.file={self.log_file}",
            "-cp",
            classpath,
        ]

    @property
    def formatted(self) -> bool:
        return (self.data_dir / "logs" / "meta.properties").exists()

    def format(self, jvm: list[str], cluster_id: str) -> None:
        command = [
            *jvm,
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.data_dir / "server.properties"),
            "--feature",
            "share.version=1",
            "--ignore-formatted",
        ]
        result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            last = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
            raise LocalKafkaError(f"could not format {self.data_dir}: {last[0]}")

    def launch(self, jvm: list[str]) -> None:
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.data_dir / "stdout.log", "ab") as out:
            self.process = subprocess.Popen(
                [*jvm, "kafka.Kafka", str(self.data_dir / "server.properties")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )

    def exited(self) -> str | None:
        """Why the node is no longer running (one line), if it exited."""
        if self.process is None or self.process.poll() is None:
            return None
        error = self.last_error()
        return (
            f"the broker exited with status {self.process.returncode}"
            + (f" ({error})" if error else "")
            + f"; see {self.log_file}"
        )

    def stop(self) -> None:
        """Stops the node with SIGTERM; kills it if it hangs."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self) -> None:
        """Kills the node at once (SIGKILL), as a machine that dies."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def last_error(self) -> str | None:
        """The last ERROR or FATAL line the node logged in this run (a persistent folder's log
        also holds earlier runs'), cut to one short line; ``None`` if there is none."""
        try:
            with open(self.log_file, "rb") as log:
                log.seek(self._log_offset)
                lines = log.read().decode(errors="replace").splitlines()
        except OSError:
            return None
        errors = [line for line in lines if " ERROR " in line or " FATAL " in line]
        return errors[-1].strip()[:300] if errors else None


def _wait_for_brokers(nodes: list[_Node], bootstrap_servers: str, count: int) -> None:
    """Waits until the cluster's metadata lists ``count`` brokers.

    Raises:
      LocalKafkaError: If a node exits, or the brokers do not answer in time.
    """
    from confluent_kafka.admin import AdminClient

    quiet = logging.getLogger("broker.devkafka.librdkafka")
    quiet.setLevel(logging.CRITICAL)
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "logger": quiet})
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        for node in nodes:
            why = node.exited()
            if why:
                raise LocalKafkaError(why)
        try:
            if len(admin.list_topics(timeout=1).brokers) >= count:
                return
        except Exception:  # KafkaException while the listeners are not up yet
            time.sleep(0.1)
    errors = [error for node in nodes if (error := node.last_error())]
    raise LocalKafkaError(
        f"the broker did not answer within {STARTUP_TIMEOUT}s"
        + (f" ({errors[-1]})" if errors else "")
        + f"; see {nodes[-1].log_file}"
    )


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
        self._node: _Node | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def process(self) -> subprocess.Popen | None:
        """The broker's process, while it runs."""
        return None if self._node is None else self._node.process

    def start(self) -> None:
        """Formats the data folder if it is new, starts the broker and waits until it answers.

        Raises:
          LocalKafkaError: If Java, the jars or the port are missing, or the broker fails to start.
        """
        check_port_free(self.port)
        if self.tls is not None:
            check_port_free(self.tls.port)
        config = BrokerConfig(
            port=self.port,
            controller_port=free_port(),
            data_dir=self.data_dir.resolve(),
            tls=self.tls,
            tenant=self.tenant,
        )
        self._node = node = _Node(config, os.environ.get("KAFKA_HEAP_OPTS", DEFAULT_HEAP_OPTS))
        jvm = node.prepare()
        if not node.formatted:
            node.format(jvm, new_cluster_id())
        node.launch(jvm)
        try:
            _wait_for_brokers([node], self.bootstrap_servers, 1)
        except LocalKafkaError:
            if node.exited() is None:
                self.stop()
            raise
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

    def stop(self) -> None:
        """Stops the broker with SIGTERM, kills it if it hangs, and drops a throwaway data folder."""
        if self._node is not None:
            self._node.stop()
        if self.ephemeral:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def last_error(self) -> str | None:
        """The last ERROR or FATAL line the broker logged in this run, cut to one short line."""
        return None if self._node is None else self._node.last_error()


#: The JVM heap of each node of a local cluster: four of them share the machine.
CLUSTER_HEAP_OPTS = "-Xms128m -Xmx512m"


class LocalCluster:
    """A local Kafka cluster: one KRaft controller and ``brokers`` brokers, each a process.

    A controller of its own, rather than combined nodes: brokers can then be killed (one, or two of
    three) without taking the controller quorum with them, so what is tested is what brokers do
    (leader elections, in-sync replicas shrinking, ``min.insync.replicas`` refusing writes) with a
    controller that always answers.  Topics made with the cluster's default have a replica on
    every broker (up to 3), and need all but one in sync (``min.insync.replicas``); so do Kafka's
    internal topics.

    Parameters:
      brokers(int): How many brokers.
      port(int): The first broker's client port; the others follow it (0: free ports).
      data_dir(Path|None): The persistent data folder (a folder a node); ``None``: throwaway.
    """

    def __init__(self, *, brokers: int = 3, port: int = 0, data_dir: Path | None = None) -> None:
        self.ephemeral = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="kafka-tasks-cluster-")) if data_dir is None else Path(data_dir)
        self.ports = [free_port() for _ in range(brokers)] if port == 0 else [port + i for i in range(brokers)]
        controller_port = free_port()
        voters = f"1@127.0.0.1:{controller_port}"
        replication = min(3, brokers)
        heap = os.environ.get("KAFKA_HEAP_OPTS", CLUSTER_HEAP_OPTS)
        folder = self.data_dir.resolve()
        controller = BrokerConfig(
            0,
            controller_port,
            folder / "controller",
            node_id=1,
            roles="controller",
            voters=voters,
            replication=replication,
        )
        self.nodes: dict[int, _Node] = {1: _Node(controller, heap)}
        for index, client_port in enumerate(self.ports):
            node_id = index + 2
            config = BrokerConfig(
                client_port,
                controller_port,
                folder / f"broker-{node_id}",
                node_id=node_id,
                roles="broker",
                voters=voters,
                replication=replication,
            )
            self.nodes[node_id] = _Node(config, heap)
        self._jvm: dict[int, list[str]] = {}

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    @property
    def broker_ids(self) -> list[int]:
        return [node_id for node_id, node in self.nodes.items() if node.config.roles == "broker"]

    def start(self) -> None:
        """Formats the nodes that are new (one cluster id for all), starts them and waits until
        every broker is in the cluster's metadata.

        Raises:
          LocalKafkaError: If a port is taken, Java or the jars are missing, or a node fails to start.
        """
        for port in self.ports:
            check_port_free(port)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        id_file = self.data_dir / "cluster-id"
        cluster_id = id_file.read_text().strip() if id_file.exists() else new_cluster_id()
        id_file.write_text(cluster_id)
        for node_id, node in self.nodes.items():
            self._jvm[node_id] = node.prepare()
            if not node.formatted:
                node.format(self._jvm[node_id], cluster_id)
        for node_id, node in self.nodes.items():
            node.launch(self._jvm[node_id])
        try:
            _wait_for_brokers(list(self.nodes.values()), self.bootstrap_servers, len(self.ports))
        except LocalKafkaError:
            self.stop()
            raise

    def kill_broker(self, node_id: int) -> None:
        """SIGKILLs one broker, as a machine that dies."""
        self.nodes[node_id].kill()

    def stop_broker(self, node_id: int) -> None:
        """Stops one broker cleanly (SIGTERM), as a rolling restart does."""
        self.nodes[node_id].stop()

    def start_broker(self, node_id: int) -> None:
        """Starts a broker that was stopped or killed, and waits until it is back in the metadata."""
        node = self.nodes[node_id]
        node.launch(self._jvm[node_id])
        _wait_for_brokers([node], f"127.0.0.1:{node.config.port}", len(self.running_brokers()))

    def running_brokers(self) -> list[int]:
        return [node_id for node_id in self.broker_ids if self.nodes[node_id].process is not None]

    def stop(self) -> None:
        """Stops every node (the brokers first, then the controller), and drops a throwaway folder."""
        for node_id in sorted(self.nodes, reverse=True):
            self.nodes[node_id].stop()
        if self.ephemeral:
            shutil.rmtree(self.data_dir, ignore_errors=True)


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


def run(
    *,
    port: int,
    data_dir: Path | None,
    tls: TLSListener | None = None,
    tenant: Tenant | None = None,
    brokers: int = 1,
) -> int:
    """Runs the broker (or, with ``brokers`` over 1, a cluster) in the foreground until SIGINT or SIGTERM.

    Returns:
      int: The process exit status.
    """
    try:
        if brokers > 1:
            if tls is not None or tenant is not None:
                raise LocalKafkaError("--ssl-dir and --tenant-prefix run on one broker: leave out --brokers")
            kafka = LocalCluster(brokers=brokers, port=port, data_dir=data_dir)
        else:
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
    if brokers > 1:
        what = f" ({brokers} brokers and a KRaft controller)"
    else:
        what = "" if tls is None else f", TLS with client certificates at 127.0.0.1:{tls.port}"
        if tenant is not None:
            what += f" (tenant {tenant.principal!r}: topics and groups under {tenant.prefix!r}, no creation)"
    print(
        f"Kafka {KAFKA_VERSION} is ready at {kafka.bootstrap_servers}{what} "
        f"(started in {time.monotonic() - started:.1f}s; data {kafka.data_dir})",
        flush=True,
    )
    nodes = list(kafka.nodes.values()) if brokers > 1 else [kafka._node]
    try:
        while not stopping and all(node.exited() is None for node in nodes):
            time.sleep(0.2)
        if not stopping:
            why = next(node.exited() for node in nodes if node.exited())
            print(f"kafka-tasks kafka: error: {why}", file=sys.stderr)
            kafka.stop()
            return 1
    finally:
        kafka.stop()
    print("Kafka stopped.", flush=True)
    return 0
