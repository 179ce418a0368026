"""Kafka connection settings, read from the environment.

The names follow the Heroku Apache Kafka add-on (``KAFKA_URL``, ``KAFKA_TRUSTED_CERT``, ...).
Other providers use ``KAFKA_BOOTSTRAP_SERVERS``, ``KAFKA_SECURITY_PROTOCOL`` and ``KAFKA_SASL_*``;
any other librdkafka setting can be passed through as ``KAFKA_RDKAFKA_<NAME>``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

#: The values librdkafka accepts for ``security.protocol``.
SECURITY_PROTOCOLS = ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")

#: The values accepted for ``sasl.mechanism``.
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")

#: The security protocol each ``KAFKA_URL`` scheme stands for.
_URL_SCHEMES = {"kafka": "plaintext", "kafka+ssl": "ssl"}

#: Environment variables with this prefix are passed through to librdkafka.
_RDKAFKA_PREFIX = "KAFKA_RDKAFKA_"

#: The environment variable each field is read from, and the librdkafka setting it becomes.
_FIELDS = {
    "bootstrap_servers": ("KAFKA_BOOTSTRAP_SERVERS", "bootstrap.servers"),
    "security_protocol": ("KAFKA_SECURITY_PROTOCOL", "security.protocol"),
    "ssl_ca_pem": ("KAFKA_TRUSTED_CERT", "ssl.ca.pem"),
    "ssl_certificate_pem": ("KAFKA_CLIENT_CERT", "ssl.certificate.pem"),
    "ssl_key_pem": ("KAFKA_CLIENT_CERT_KEY", "ssl.key.pem"),
    "sasl_mechanism": ("KAFKA_SASL_MECHANISM", "sasl.mechanism"),
    "sasl_username": ("KAFKA_SASL_USERNAME", "sasl.username"),
    "sasl_password": ("KAFKA_SASL_PASSWORD", "sasl.password"),
    "prefix": ("KAFKA_PREFIX", None),
}

#: librdkafka settings (and their aliases) that only fields may set, mapped to that field.
_OWNED_KEYS = {key: name for name, (_, key) in _FIELDS.items() if key}
_OWNED_KEYS |= {"metadata.broker.list": "bootstrap_servers", "sasl.mechanisms": "sasl_mechanism"}

_SECRET_FIELDS = {"ssl_key_pem", "sasl_password"}
_PEM_FIELDS = {"ssl_ca_pem", "ssl_certificate_pem"}
_HOST_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+")
_PREFIX_RE = re.compile(r"[A-Za-z0-9._-]*")


class ConfigurationError(ValueError):
    """Raised when a Kafka setting is missing or invalid.  The message names the environment
    variable (or keyword argument) at fault, and never includes a secret's value.
    """


@dataclass(frozen=True, repr=False)
class KafkaSettings:
    """How to reach a Kafka cluster.  Build one with :meth:`from_env`, which validates;
    the constructor trusts its arguments.  ``repr()`` masks secrets, so settings can be logged.
    """

    bootstrap_servers: str = "localhost:9092"
    security_protocol: str | None = None
    ssl_ca_pem: str | None = None
    ssl_certificate_pem: str | None = None
    ssl_key_pem: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    prefix: str = ""
    # Left out of the hash because a mapping can't be hashed; still compared.
    extra: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # Copied so the caller can't change a frozen instance through its own dict.
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> KafkaSettings:
        """Read and validate settings from environment variables.

        Parameters:
          environ: The variables to read.  Defaults to ``os.environ``.
          **overrides: Field values that win over the environment.  A
            value of None means "not given".  ``extra`` is merged over the
            ``KAFKA_RDKAFKA_*`` variables.

        Raises:
          TypeError: If an override isn't the name of a field.
          ConfigurationError: If a setting is invalid or one is missing.

        Returns:
          KafkaSettings: The validated settings.
        """
        unknown = sorted(set(overrides) - set(_FIELDS) - {"extra"})
        if unknown:
            raise TypeError(f"from_env() got unexpected keyword argument(s): {', '.join(unknown)}")

        env = os.environ if environ is None else environ
        given = {name: value for name, value in overrides.items() if value is not None}

        def read(name: str) -> tuple[Any, str]:  # A field's value (None if unset), and who to blame for it.
            if name in given:
                return given[name], name
            var = _FIELDS[name][0]
            return _get(env, var), var

        # An override beats KAFKA_URL (Heroku's name), which beats KAFKA_BOOTSTRAP_SERVERS.
        candidates = [("bootstrap_servers", given.get("bootstrap_servers"))]
        candidates += [(var, _get(env, var)) for var in ("KAFKA_URL", "KAFKA_BOOTSTRAP_SERVERS")]
        servers, url_protocol = "localhost:9092", None
        for source, value in candidates:
            if value is not None:
                servers, url_protocol = _parse_servers(value, source, urls=source == "KAFKA_URL")
                break

        protocol, protocol_source = read("security_protocol")
        protocol = _choice(protocol, protocol_source, SECURITY_PROTOCOLS, str.lower)
        mechanism, mechanism_source = read("sasl_mechanism")
        mechanism = _choice(mechanism, mechanism_source, SASL_MECHANISMS, str.upper)
        username, _ = read("sasl_username")
        password, _ = read("sasl_password")

        pems = {}
        for name in ("ssl_ca_pem", "ssl_certificate_pem", "ssl_key_pem"):
            value, source = read(name)
            if value is not None and "-----BEGIN" not in value:
                raise ConfigurationError(f"{source} must contain PEM data (a '-----BEGIN ...' block), not a path.")
            pems[name] = value
        for have, need in (("ssl_certificate_pem", "ssl_key_pem"), ("ssl_key_pem", "ssl_certificate_pem")):
            if pems[have] is not None and pems[need] is None:
                raise ConfigurationError(f"{_names(need)} is required when {_names(have)} is set.")

        sasl_given = any(value is not None for value in (mechanism, username, password))
        uses_certs = pems["ssl_ca_pem"] is not None or pems["ssl_certificate_pem"] is not None
        if protocol is None:
            if sasl_given:
                protocol = "sasl_ssl"
            elif url_protocol == "ssl" or uses_certs:
                protocol = "ssl"

        if protocol in ("sasl_plaintext", "sasl_ssl"):
            if mechanism is None:
                raise ConfigurationError(
                    f"{_names('sasl_mechanism')} is required with security protocol {protocol}; "
                    f"expected one of {', '.join(SASL_MECHANISMS)}."
                )
            # OAUTHBEARER gets its token from sasl.oauthbearer.* settings instead.
            if mechanism != "OAUTHBEARER":
                for name, value in (("sasl_username", username), ("sasl_password", password)):
                    if not value:
                        raise ConfigurationError(f"{_names(name)} is required for SASL mechanism {mechanism}.")
        elif sasl_given:
            raise ConfigurationError(
                f"SASL settings need protocol sasl_ssl or sasl_plaintext; {protocol_source} is {protocol}."
            )
        if uses_certs and protocol in ("plaintext", "sasl_plaintext"):
            raise ConfigurationError(f"Certificates need protocol ssl or sasl_ssl; {protocol_source} is {protocol}.")

        prefix, prefix_source = read("prefix")
        prefix = "" if prefix is None else prefix.strip()
        if not _PREFIX_RE.fullmatch(prefix):
            raise ConfigurationError(
                f"{prefix_source} may only contain letters, digits, '.', '_' and '-' (got {prefix!r})."
            )

        return cls(
            bootstrap_servers=servers,
            security_protocol=protocol,
            **pems,
            sasl_mechanism=mechanism,
            sasl_username=username,
            sasl_password=password,
            prefix=prefix,
            extra=_read_extra(env, given.get("extra", {})),
        )

    def client_config(self) -> dict[str, str]:
        """The librdkafka settings shared by producers, consumers and admin clients.

        Returns:
          dict[str, str]: A new dict; callers may add to it.
        """
        config = {}
        for name, (_, key) in _FIELDS.items():
            value = getattr(self, name)
            if key and value is not None:
                config[key] = value
        config.update(self.extra)
        if self.security_protocol in ("ssl", "sasl_ssl") and self.ssl_ca_pem is not None:
            # Heroku's broker certificates don't name the broker hosts, so hostname
            # checks fail; the chain is still verified against the trusted CA.
            config.setdefault("ssl.endpoint.identification.algorithm", "none")
        return config

    def topic(self, name: str) -> str:
        """Return the Kafka topic for a queue or topic name, with the prefix."""
        return self.prefix + name

    def group(self, name: str) -> str:
        """Return the consumer group id for a group name, with the prefix."""
        return self.prefix + name

    def unprefixed(self, topic: str) -> str:
        """Return the name that :meth:`topic` turned into ``topic``.

        Raises:
          ValueError: If ``topic`` doesn't start with the prefix.
        """
        if not topic.startswith(self.prefix):
            raise ValueError(f"Topic {topic!r} doesn't start with prefix {self.prefix!r}.")
        return topic[len(self.prefix) :]

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra":
                value = {key: "***" if _is_secret(key) else item for key, item in value.items()}
            elif value is not None and f.name in _SECRET_FIELDS:
                value = "***"
            elif value is not None and f.name in _PEM_FIELDS:
                value = f"<pem {len(value.encode())} bytes>"
            parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _get(environ: Mapping[str, str], var: str) -> str | None:
    # Empty variables are common in Docker and CI templates; they mean "unset".
    value = environ.get(var)
    return value if value is not None and value.strip() else None


def _names(name: str) -> str:
    return f"{_FIELDS[name][0]} (or {name}=)"


def _choice(value: str | None, source: str, choices: tuple[str, ...], normalize: Any) -> str | None:
    if value is None:
        return None
    value = normalize(value.strip())
    if value not in choices:
        raise ConfigurationError(f"{source} must be one of {', '.join(choices)} (got {value!r}).")
    return value


def _parse_servers(value: str, source: str, urls: bool = False) -> tuple[str, str | None]:
    """Validate a comma-separated list of ``host:port`` (or, with ``urls``, ``kafka[+ssl]://host:port``).

    Returns:
      tuple[str, str | None]: The ``host:port`` list, and "ssl" if every URL was ``kafka+ssl://``.
    """
    # Entries are named by position, not echoed: a URL may carry credentials.
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if not entries:
        raise ConfigurationError(f"{source} lists no servers.")
    servers, protocols = [], set()
    for number, entry in enumerate(entries, 1):
        scheme, sep, rest = entry.partition("://")
        if sep:
            if not urls or scheme.lower() not in _URL_SCHEMES:
                expected = "kafka:// or kafka+ssl://" if urls else "none, just host:port"
                raise ConfigurationError(f"{source} entry {number} has an unsupported scheme; expected {expected}.")
            protocols.add(_URL_SCHEMES[scheme.lower()])
            entry = rest.rstrip("/")
        else:
            protocols.add(None)
        host, _, port = entry.rpartition(":")
        if not host or not port:
            raise ConfigurationError(f"{source} entry {number} must be host:port; the port is missing.")
        if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise ConfigurationError(f"{source} entry {number} has an invalid port; expected 1 to 65535.")
        if not _HOST_RE.fullmatch(host):
            raise ConfigurationError(f"{source} entry {number} has an invalid host.")
        servers.append(f"{host}:{port}")
    return ",".join(servers), "ssl" if protocols == {"ssl"} else None


def _read_extra(environ: Mapping[str, str], overrides: Mapping[str, Any]) -> dict[str, str]:
    """Collect pass-through librdkafka settings: ``KAFKA_RDKAFKA_*`` variables, then ``overrides``."""
    extra = {}
    for var in sorted(environ):
        if var.startswith(_RDKAFKA_PREFIX) and _get(environ, var) is not None:
            key = var[len(_RDKAFKA_PREFIX) :].lower().replace("_", ".")
            _check_key(key, var)
            extra[key] = environ[var]
    for key, value in overrides.items():
        _check_key(key, "extra")
        if not isinstance(value, (str, int, float)):
            raise ConfigurationError(f"extra[{key!r}] must be a string, number or bool.")
        extra[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return extra


def _check_key(key: Any, source: str) -> None:
    if not isinstance(key, str) or not key.strip(". "):
        raise ConfigurationError(f"{source} names no librdkafka setting.")
    owner = _OWNED_KEYS.get(key.strip().lower())
    if owner is not None:
        use = (
            "KAFKA_URL or KAFKA_BOOTSTRAP_SERVERS (or bootstrap_servers=)"
            if owner == "bootstrap_servers"
            else _names(owner)
        )
        raise ConfigurationError(f"{source} sets {key!r}, which this module owns; use {use} instead.")


def refuse_owned(settings: KafkaSettings, owned: Mapping[str, str]) -> None:
    """Refuses pass-through librdkafka settings (``KAFKA_RDKAFKA_*``) that a client sets itself
    because its guarantees depend on them: better an error at start than a setting silently lost.

    Parameters:
      owned: librdkafka keys, each with why it is owned or what to set instead.

    Raises:
      ConfigurationError: Naming the variable.
    """
    for key in settings.extra:
        if key in owned:
            raise ConfigurationError(
                f"{rdkafka_variable(key)} (or extra[{key!r}]) sets {key!r}, which kafka-tasks sets itself: {owned[key]}"
            )


def require_earliest_reset(settings: KafkaSettings, why: str) -> None:
    """Refuses an ``auto.offset.reset`` (``KAFKA_RDKAFKA_AUTO_OFFSET_RESET``) other than earliest.

    Raises:
      ConfigurationError: Naming the variable, and ``why``.
    """
    reset = settings.extra.get("auto.offset.reset", "earliest")
    if str(reset).lower() not in ("earliest", "smallest", "beginning"):
        raise ConfigurationError(f"{rdkafka_variable('auto.offset.reset')} is {reset!r}: {why}")


def rdkafka_variable(key: str) -> str:
    """The ``KAFKA_RDKAFKA_*`` variable that sets a librdkafka key."""
    return _RDKAFKA_PREFIX + key.upper().replace(".", "_")


def _is_secret(key: str) -> bool:
    key = key.lower()
    # sasl.oauthbearer.config usually embeds a client secret.
    return "password" in key or "secret" in key or key.endswith(".key.pem") or key == "sasl.oauthbearer.config"
