"""The reference system's configuration: every environment variable, read once into one object.

:data:`VARIABLES` lists every variable any part of the reference system reads, with its meaning
and default.  It is the one list: ``.env.example`` and the table in ``docs/configuration.md`` are
rendered from it (``python -m tasks.config``), and a test fails when either disagrees with it.
:meth:`Config.from_env` reads the variables the Python processes use, once, and validates them
with errors that name the variable and never show a secret.  Some variables are read by other
programs, and are listed so that a reader finds them here too: gunicorn reads ``PORT``,
``WEB_CONCURRENCY`` and ``GUNICORN_CMD_ARGS``; the local Kafka launcher (``kafka-tasks kafka``)
reads ``KAFKA_HOME``, ``KAFKA_TASKS_CACHE`` and ``KAFKA_HEAP_OPTS``; ``make run`` reads
``KAFKA_PORT``.

Importing this module reads nothing: only :meth:`Config.from_env` does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker import ConfigurationError, KafkaSettings

#: Who reads a variable that :class:`Config` does not hold.
GUNICORN, LAUNCHER, MAKE_RUN = "gunicorn", "kafka-tasks kafka", "make run"


@dataclass(frozen=True)
class Variable:
    """One environment variable.

    Parameters:
      name(str): Its name.
      section(str): The heading it is listed under.
      help(str): What it means, in a sentence or two.
      default(str|None): Its default, as a reader should see it (``None``: unset).
      example(str|None): A value for ``.env.example`` (commented out), when the default is no example.
      read_by(str|None): The program that reads it, when that is not ``Config``.
      into(str|None): The :class:`Config` field it is read into, if it is one.
      parse(callable|None): ``parse(name, text)`` turns its text (or its default) into the field's
        value, raising :class:`ConfigurationError` that names the variable.
    """

    name: str
    section: str
    help: str
    default: str | None = None
    example: str | None = None
    read_by: str | None = None
    into: str | None = None
    parse: Callable[[str, str], Any] | None = None


def _millis(name: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ConfigurationError(f"{name} must be a whole number of milliseconds, 1 or more (got {text[:40]!r}).")
    return int(text)


#: The brokers ``KAFKA_TASKS_BROKER`` may name.
BROKERS = ("kafka", "stub")


def _broker(name: str, text: str) -> str:
    if text.lower() not in BROKERS:
        raise ConfigurationError(f"{name} must be one of {', '.join(BROKERS)} (got {text[:40]!r}).")
    return text.lower()


#: The shortest password the ops pages take.
MIN_PASSWORD_LENGTH = 12


def _password(name: str, text: str | None) -> str | None:
    if text is None:
        return None
    if len(text) < MIN_PASSWORD_LENGTH:
        raise ConfigurationError(f"{name} must have {MIN_PASSWORD_LENGTH} characters or more.")
    return text


def _database_url(name: str, text: str) -> str:
    return database_url(text)


#: Every environment variable of the reference system, in the order the documentation lists them.
VARIABLES: tuple[Variable, ...] = (
    Variable(
        "KAFKA_URL",
        "Kafka",
        "Heroku's form: comma-separated kafka+ssl:// URLs. Wins over KAFKA_BOOTSTRAP_SERVERS.",
        example="kafka+ssl://broker-1.example.com:9096,kafka+ssl://broker-2.example.com:9096",
    ),
    Variable(
        "KAFKA_BOOTSTRAP_SERVERS",
        "Kafka",
        "A plain host:port list. `make run` starts a local broker when neither is set.",
        default="localhost:9092",
        example="127.0.0.1:9092",
    ),
    Variable(
        "KAFKA_TRUSTED_CERT",
        "Kafka",
        "The CA certificates that sign the brokers' certificates, as PEM contents.",
        example='"-----BEGIN CERTIFICATE-----..."',
    ),
    Variable(
        "KAFKA_CLIENT_CERT",
        "Kafka",
        "This client's certificate, as PEM contents (Heroku sets it).",
        example='"-----BEGIN CERTIFICATE-----..."',
    ),
    Variable(
        "KAFKA_CLIENT_CERT_KEY",
        "Kafka",
        "This client's private key, as PEM contents (Heroku sets it).",
        example='"-----BEGIN PRIVATE KEY-----..."',
    ),
    Variable(
        "KAFKA_SECURITY_PROTOCOL",
        "Kafka",
        "plaintext, ssl, sasl_plaintext or sasl_ssl; guessed from the URL, certificates and SASL settings.",
        example="sasl_ssl",
    ),
    Variable(
        "KAFKA_SASL_MECHANISM",
        "Kafka",
        "PLAIN (Confluent Cloud), SCRAM-SHA-256 or SCRAM-SHA-512 (Aiven, Redpanda), or OAUTHBEARER.",
        example="SCRAM-SHA-512",
    ),
    Variable("KAFKA_SASL_USERNAME", "Kafka", "The SASL user name.", example=""),
    Variable("KAFKA_SASL_PASSWORD", "Kafka", "The SASL password.", example=""),
    Variable(
        "KAFKA_PREFIX",
        "Kafka",
        "Prepended to every topic and consumer group (Heroku multi-tenant plans), e.g. tenant-1234.",
        example="",
    ),
    Variable(
        "KAFKA_RDKAFKA_<NAME>",
        "Kafka",
        "Any other librdkafka setting: NAME is the setting, upper-cased, its dots as underscores.",
        example="KAFKA_RDKAFKA_SOCKET_KEEPALIVE_ENABLE=true",
    ),
    Variable(
        "KAFKA_DELIVERY_TIMEOUT_MS",
        "Kafka",
        "How long a send waits for Kafka's acknowledgement before failing; the gateway then answers 503.",
        default="4000",
        into="delivery_timeout_ms",
        parse=_millis,
    ),
    Variable(
        "KAFKA_HOME",
        "Local Kafka",
        "An unpacked Apache Kafka 4.x to run instead of the jars fetched with Maven.",
        example="/opt/kafka",
        read_by=LAUNCHER,
    ),
    Variable(
        "KAFKA_TASKS_CACHE",
        "Local Kafka",
        "Where the fetched Kafka jars are cached.",
        default="~/.cache/kafka-tasks",
        read_by=LAUNCHER,
    ),
    Variable(
        "KAFKA_HEAP_OPTS", "Local Kafka", "The local broker's JVM heap.", default="-Xms256m -Xmx1g", read_by=LAUNCHER
    ),
    Variable(
        "KAFKA_PORT",
        "Local Kafka",
        "The port of the local broker that `make run` starts.",
        default="9092",
        read_by=MAKE_RUN,
    ),
    Variable(
        "DATABASE_URL",
        "Database",
        "PostgreSQL (Heroku's postgres:// form is accepted), or any SQLAlchemy URL of SQLite or PostgreSQL.",
        default="sqlite:///var/kafka-tasks.db",
        example="postgres://user:password@localhost:5432/kafka_tasks",
        into="database_url",
        parse=_database_url,
    ),
    Variable("PORT", "Services", "The port of the web process.", default="5000", read_by=GUNICORN),
    Variable(
        "WEB_CONCURRENCY",
        "Services",
        "The web process's gunicorn worker processes (Heroku sets it per dyno).",
        default="2",
        read_by=GUNICORN,
    ),
    Variable(
        "GUNICORN_CMD_ARGS",
        "Services",
        "Extra gunicorn options. There is no access log by default (Heroku's router logs every request).",
        example="--access-logfile -",
        read_by=GUNICORN,
    ),
    Variable(
        "USER_LOOKUP_TIMEOUT_MS",
        "Services",
        "How long GET /api/users/<id> waits for the auth service.",
        default="5000",
        into="user_lookup_timeout_ms",
        parse=_millis,
    ),
    Variable(
        "GET_USER_TIMEOUT_MS",
        "Services",
        "How long a payment waits for the auth service before it is retried.",
        default="5000",
        into="get_user_timeout_ms",
        parse=_millis,
    ),
    Variable(
        "PAYMENTS_MIN_BACKOFF_MS",
        "Services",
        "The shortest backoff of a payment's retries.",
        default="1000",
        into="payments_min_backoff_ms",
        parse=_millis,
    ),
    Variable(
        "PAYMENTS_MAX_BACKOFF_MS",
        "Services",
        "The longest backoff of a payment's retries.",
        default="60000",
        into="payments_max_backoff_ms",
        parse=_millis,
    ),
    Variable(
        "OPS_PASSWORD",
        "Services",
        "Turns on /ops (the dashboard) and /metrics, behind HTTP basic auth with this password (12 or more "
        "characters; any user name). Unset, both are off. `make run` makes one up and prints it.",
        example="a-long-random-password",
        into="ops_password",
        parse=_password,
    ),
    Variable(
        "KAFKA_TASKS_BROKER",
        "Services",
        "`stub` runs the actors on Dramatiq's in-memory StubBroker (for tests of actor logic only).",
        default="kafka",
        example="stub",
        into="broker",
        parse=_broker,
    ),
)

#: The SQLite database used when ``DATABASE_URL`` is not set.
DEFAULT_DATABASE_URL = "sqlite:///var/kafka-tasks.db"


@dataclass(frozen=True)
class Config:
    """What the reference system's processes are configured with.  Build one with
    :meth:`from_env`, which validates; the constructor trusts its arguments (tests build it so).

    Parameters:
      kafka(KafkaSettings): How to reach Kafka.
      broker(str): ``kafka``, or ``stub`` for Dramatiq's StubBroker.
      delivery_timeout_ms(int): The bound on waiting for Kafka to acknowledge a send.
      database_url(str): The SQLAlchemy URL of the database.
      user_lookup_timeout_ms(int): How long ``GET /api/users/<id>`` waits for the auth service.
      get_user_timeout_ms(int): How long a payment waits for the auth service.
      payments_min_backoff_ms(int), payments_max_backoff_ms(int): The backoff of payment retries.
      ops_password(str|None): The password of ``/ops`` and ``/metrics``; ``None`` turns them off.
    """

    # The defaults are the variables' (a test holds them to it).
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    broker: str = "kafka"
    delivery_timeout_ms: int = 4_000
    database_url: str = DEFAULT_DATABASE_URL
    user_lookup_timeout_ms: int = 5_000
    get_user_timeout_ms: int = 5_000
    payments_min_backoff_ms: int = 1_000
    payments_max_backoff_ms: int = 60_000
    ops_password: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        # The database URL may carry a password; KafkaSettings masks its own secrets.
        return (
            f"Config(broker={self.broker!r}, database_url={_masked_url(self.database_url)!r}, "
            f"kafka={self.kafka!r}, delivery_timeout_ms={self.delivery_timeout_ms}, ...)"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Reads and validates the configuration from environment variables.

        Parameters:
          environ: The variables to read; ``os.environ`` by default.

        Raises:
          ConfigurationError: Naming the variable that is invalid, without its value if secret.
        """
        env = os.environ if environ is None else environ
        values = {
            variable.into: variable.parse(variable.name, _get(env, variable.name) or variable.default)
            for variable in VARIABLES
            if variable.into is not None
        }
        config = cls(kafka=KafkaSettings.from_env(env), **values)
        if config.payments_min_backoff_ms > config.payments_max_backoff_ms:
            raise ConfigurationError("PAYMENTS_MIN_BACKOFF_MS must not be more than PAYMENTS_MAX_BACKOFF_MS.")
        return config


def database_url(url: str | None) -> str:
    """Returns the SQLAlchemy URL for a ``DATABASE_URL`` (Heroku's ``postgres://`` accepted), or SQLite's default."""
    if not url:
        return DEFAULT_DATABASE_URL
    from broker.taskstore import sqlalchemy_url

    try:
        return sqlalchemy_url(url)
    except ValueError:
        raise ConfigurationError("DATABASE_URL must be a postgres://, postgresql:// or sqlite:/// URL.") from None


def _get(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    return value.strip() if value is not None and value.strip() else None


def _masked_url(url: str) -> str:
    scheme, separator, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{separator}{credentials.split(':', 1)[0]}:***@{host}"


# Rendering ---------------------------------------------------------------------------------------


def render_env_example(variables=VARIABLES) -> str:
    """Returns ``.env.example``: every variable, commented out, under its section."""
    lines = [
        "# kafka-tasks: every environment variable of the reference system (generated from",
        "# tasks/config.py by `python -m tasks.config env`). Copy to .env for `make run`, or set them on",
        "# your platform. All are optional locally.",
    ]
    section = None
    for variable in variables:
        if variable.section != section:
            section = variable.section
            lines += ["", f"# --- {section} " + "-" * (92 - len(section))]
        default = f" Default: {variable.default}." if variable.default is not None else ""
        reader = f" (Read by {variable.read_by}.)" if variable.read_by else ""
        lines.append(f"# {variable.help}{default}{reader}")
        if variable.name.endswith("<NAME>"):
            lines.append(f"# {variable.example}")
        else:
            value = variable.example if variable.example is not None else variable.default or ""
            lines.append(f"# {variable.name}={value}")
    return "\n".join(lines) + "\n"


def render_markdown_table(variables=VARIABLES) -> str:
    """Returns the table of ``docs/configuration.md``: one row per variable."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for variable in variables:
        default = f"`{variable.default}`" if variable.default is not None else ""
        reader = f" Read by {variable.read_by}." if variable.read_by else ""
        rows.append(f"| `{variable.name}` | {default} | {variable.help.replace('|', '/')}{reader} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m tasks.config env|markdown``: prints ``.env.example`` or the documentation's table."""
    what = (argv if argv is not None else sys.argv[1:]) or ["env"]
    renderers = {"env": render_env_example, "markdown": render_markdown_table}
    if what[0] not in renderers:
        print("usage: python -m tasks.config env|markdown", file=sys.stderr)
        return 2
    sys.stdout.write(renderers[what[0]]())
    return 0


if __name__ == "__main__":
    sys.exit(main())
