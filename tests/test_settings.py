"""Tests for broker.settings: reading Kafka connection settings from the environment."""

import os

import pytest

from broker.settings import ConfigurationError, KafkaSettings

CA = "-----BEGIN CERTIFICATE-----\nMIIBca...\n-----END CERTIFICATE-----\n"
CERT = "-----BEGIN CERTIFICATE-----\nMIIBcert...\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIEvTOPSECRETKEY\n-----END PRIVATE KEY-----\n"
HEROKU_URL = "kafka+ssl://ec2-1-2-3-4.compute-1.amazonaws.com:9096,kafka+ssl://ec2-5-6-7-8.compute-1.amazonaws.com:9096"
HEROKU = {"KAFKA_URL": HEROKU_URL, "KAFKA_TRUSTED_CERT": CA, "KAFKA_CLIENT_CERT": CERT, "KAFKA_CLIENT_CERT_KEY": KEY}
AIVEN = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka-abc-project.aivencloud.com:12345",
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISM": "scram-sha-512",
    "KAFKA_SASL_USERNAME": "avnadmin",
    "KAFKA_SASL_PASSWORD": "hunter2-s3cret",
}


def test_defaults_to_local_plaintext_broker():
    settings = KafkaSettings.from_env({})
    assert settings == KafkaSettings()
    assert settings.client_config() == {"bootstrap.servers": "localhost:9092"}


def test_environ_defaults_to_os_environ(monkeypatch):
    for var in list(os.environ):
        if var.startswith("KAFKA_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "from-os-environ:9092")
    assert KafkaSettings.from_env().bootstrap_servers == "from-os-environ:9092"


def test_heroku_url_gives_servers_and_ssl():
    settings = KafkaSettings.from_env({"KAFKA_URL": HEROKU_URL})
    assert (
        settings.bootstrap_servers
        == "ec2-1-2-3-4.compute-1.amazonaws.com:9096,ec2-5-6-7-8.compute-1.amazonaws.com:9096"
    )
    assert settings.security_protocol == "ssl"


def test_kafka_url_beats_bootstrap_servers():
    settings = KafkaSettings.from_env({"KAFKA_URL": "kafka://url-host:9092", "KAFKA_BOOTSTRAP_SERVERS": "other:9092"})
    assert settings.bootstrap_servers == "url-host:9092"


def test_plain_and_bare_urls_do_not_imply_ssl():
    settings = KafkaSettings.from_env({"KAFKA_URL": "kafka://a:9092, b:9093"})
    assert settings.bootstrap_servers == "a:9092,b:9093"
    assert settings.security_protocol is None


def test_mixed_url_schemes_do_not_imply_ssl():
    settings = KafkaSettings.from_env({"KAFKA_URL": "kafka+ssl://a:9096,kafka://b:9092"})
    assert settings.security_protocol is None


def test_ipv6_server_accepted():
    assert KafkaSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "[::1]:9092"}).bootstrap_servers == "[::1]:9092"


@pytest.mark.parametrize(
    "url",
    [
        "http://host:9092",
        "kafka+ssl://host",
        "kafka+ssl://host:",
        "host:port",
        "kafka://host:0",
        "kafka://host:70000",
        "kafka://user:pw@host:9092",
        ",",
    ],
)
def test_bad_kafka_url_names_variable(url):
    with pytest.raises(ConfigurationError, match="KAFKA_URL") as error:
        KafkaSettings.from_env({"KAFKA_URL": url})
    assert "pw" not in str(error.value)


@pytest.mark.parametrize("servers", ["host", "host:x", "kafka://host:9092"])
def test_bad_bootstrap_servers_names_variable(servers):
    with pytest.raises(ConfigurationError, match="KAFKA_BOOTSTRAP_SERVERS"):
        KafkaSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": servers})


def test_heroku_certificates_in_client_config():
    config = KafkaSettings.from_env(HEROKU).client_config()
    assert config["security.protocol"] == "ssl"
    assert (config["ssl.ca.pem"], config["ssl.certificate.pem"], config["ssl.key.pem"]) == (CA, CERT, KEY)
    assert config["ssl.endpoint.identification.algorithm"] == "none"
    assert "enable.ssl.certificate.verification" not in config


def test_extra_can_restore_hostname_verification():
    settings = KafkaSettings.from_env(HEROKU, extra={"ssl.endpoint.identification.algorithm": "https"})
    assert settings.client_config()["ssl.endpoint.identification.algorithm"] == "https"


def test_no_hostname_override_without_trusted_cert():
    config = KafkaSettings.from_env({"KAFKA_URL": HEROKU_URL}).client_config()
    assert "ssl.endpoint.identification.algorithm" not in config


def test_certificates_imply_ssl():
    settings = KafkaSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "a:9093", "KAFKA_TRUSTED_CERT": CA})
    assert settings.security_protocol == "ssl"


def test_certificates_with_plaintext_protocol_rejected():
    with pytest.raises(ConfigurationError, match="KAFKA_SECURITY_PROTOCOL"):
        KafkaSettings.from_env({"KAFKA_TRUSTED_CERT": CA, "KAFKA_SECURITY_PROTOCOL": "plaintext"})


@pytest.mark.parametrize("var", ["KAFKA_TRUSTED_CERT", "KAFKA_CLIENT_CERT", "KAFKA_CLIENT_CERT_KEY"])
def test_non_pem_value_names_variable_and_hides_value(var):
    env = dict(HEROKU, **{var: "/etc/kafka/not-a-pem-SENSITIVE"})
    with pytest.raises(ConfigurationError, match=var) as error:
        KafkaSettings.from_env(env)
    assert "SENSITIVE" not in str(error.value)


def test_client_cert_without_key_names_key():
    with pytest.raises(ConfigurationError, match="KAFKA_CLIENT_CERT_KEY"):
        KafkaSettings.from_env({"KAFKA_TRUSTED_CERT": CA, "KAFKA_CLIENT_CERT": CERT})


def test_client_key_without_cert_names_cert():
    with pytest.raises(ConfigurationError, match="KAFKA_CLIENT_CERT "):
        KafkaSettings.from_env({"KAFKA_CLIENT_CERT_KEY": KEY})


def test_scram_sasl_config():
    config = KafkaSettings.from_env(dict(AIVEN, KAFKA_TRUSTED_CERT=CA)).client_config()
    assert config["security.protocol"] == "sasl_ssl"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (config["sasl.username"], config["sasl.password"]) == ("avnadmin", "hunter2-s3cret")
    assert config["ssl.ca.pem"] == CA


def test_sasl_credentials_default_to_sasl_ssl():
    env = {k: v for k, v in AIVEN.items() if k != "KAFKA_SECURITY_PROTOCOL"}
    assert KafkaSettings.from_env(env).security_protocol == "sasl_ssl"


def test_sasl_missing_password_names_variable():
    env = {k: v for k, v in AIVEN.items() if k != "KAFKA_SASL_PASSWORD"}
    with pytest.raises(ConfigurationError, match="KAFKA_SASL_PASSWORD"):
        KafkaSettings.from_env(env)


def test_sasl_missing_username_names_variable_and_hides_password():
    env = {k: v for k, v in AIVEN.items() if k != "KAFKA_SASL_USERNAME"}
    with pytest.raises(ConfigurationError, match="KAFKA_SASL_USERNAME") as error:
        KafkaSettings.from_env(env)
    assert "hunter2" not in str(error.value)


def test_sasl_protocol_without_mechanism_names_mechanism_variable():
    env = {k: v for k, v in AIVEN.items() if k != "KAFKA_SASL_MECHANISM"}
    with pytest.raises(ConfigurationError, match="KAFKA_SASL_MECHANISM"):
        KafkaSettings.from_env(env)


def test_oauthbearer_needs_no_password():
    settings = KafkaSettings.from_env({"KAFKA_SASL_MECHANISM": "oauthbearer"})
    assert (settings.security_protocol, settings.sasl_mechanism) == ("sasl_ssl", "OAUTHBEARER")


def test_sasl_with_non_sasl_protocol_rejected():
    with pytest.raises(ConfigurationError, match="KAFKA_SECURITY_PROTOCOL"):
        KafkaSettings.from_env(dict(AIVEN, KAFKA_SECURITY_PROTOCOL="ssl"))


def test_invalid_protocol_names_variable_and_valid_values():
    with pytest.raises(ConfigurationError, match="KAFKA_SECURITY_PROTOCOL") as error:
        KafkaSettings.from_env({"KAFKA_SECURITY_PROTOCOL": "tls"})
    assert "sasl_ssl" in str(error.value)


def test_invalid_mechanism_names_variable_and_valid_values():
    with pytest.raises(ConfigurationError, match="KAFKA_SASL_MECHANISM") as error:
        KafkaSettings.from_env(dict(AIVEN, KAFKA_SASL_MECHANISM="GSSAPI"))
    assert "SCRAM-SHA-256" in str(error.value)


def test_protocol_is_case_insensitive():
    assert KafkaSettings.from_env({"KAFKA_SECURITY_PROTOCOL": " SSL "}).security_protocol == "ssl"


def test_prefix_applies_to_topics_and_groups():
    settings = KafkaSettings.from_env({"KAFKA_PREFIX": "tenant-1234."})
    assert settings.topic("default") == "tenant-1234.default"
    assert settings.group("workers") == "tenant-1234.workers"


def test_unprefixed_inverts_topic():
    settings = KafkaSettings(prefix="tenant-1234.")
    assert settings.unprefixed(settings.topic("default")) == "default"


def test_unprefixed_rejects_foreign_topic():
    with pytest.raises(ValueError, match="other.default"):
        KafkaSettings(prefix="tenant-1234.").unprefixed("other.default")


def test_invalid_prefix_names_variable():
    with pytest.raises(ConfigurationError, match="KAFKA_PREFIX"):
        KafkaSettings.from_env({"KAFKA_PREFIX": "tenant/1234"})


def test_rdkafka_variables_pass_through():
    settings = KafkaSettings.from_env({"KAFKA_RDKAFKA_SOCKET_KEEPALIVE_ENABLE": "true", "KAFKA_RDKAFKA_LINGER_MS": "5"})
    assert dict(settings.extra) == {"socket.keepalive.enable": "true", "linger.ms": "5"}
    assert settings.client_config()["socket.keepalive.enable"] == "true"


def test_extra_override_merged_over_rdkafka_variables():
    env = {"KAFKA_RDKAFKA_LINGER_MS": "5", "KAFKA_RDKAFKA_ACKS": "all"}
    settings = KafkaSettings.from_env(env, extra={"linger.ms": 50, "enable.idempotence": True})
    assert dict(settings.extra) == {"linger.ms": "50", "acks": "all", "enable.idempotence": "true"}


@pytest.mark.parametrize(
    "key, proper",
    [
        ("bootstrap.servers", "KAFKA_BOOTSTRAP_SERVERS"),
        ("security.protocol", "KAFKA_SECURITY_PROTOCOL"),
        ("ssl.ca.pem", "KAFKA_TRUSTED_CERT"),
        ("ssl.certificate.pem", "KAFKA_CLIENT_CERT"),
        ("ssl.key.pem", "KAFKA_CLIENT_CERT_KEY"),
        ("sasl.mechanism", "KAFKA_SASL_MECHANISM"),
        ("sasl.mechanisms", "KAFKA_SASL_MECHANISM"),
        ("sasl.username", "KAFKA_SASL_USERNAME"),
        ("sasl.password", "KAFKA_SASL_PASSWORD"),
    ],
)
def test_owned_key_in_extra_rejected(key, proper):
    with pytest.raises(ConfigurationError, match=proper) as error:
        KafkaSettings.from_env({}, extra={key: "x"})
    assert repr(key) in str(error.value)


def test_owned_key_in_rdkafka_variable_rejected():
    with pytest.raises(ConfigurationError, match="KAFKA_RDKAFKA_SASL_PASSWORD") as error:
        KafkaSettings.from_env({"KAFKA_RDKAFKA_SASL_PASSWORD": "hunter2"})
    assert "hunter2" not in str(error.value)


def test_overrides_beat_environment():
    settings = KafkaSettings.from_env(
        dict(AIVEN, KAFKA_PREFIX="env."), bootstrap_servers="override:9092", sasl_password="from-code", prefix=""
    )
    assert (settings.bootstrap_servers, settings.sasl_password, settings.prefix) == ("override:9092", "from-code", "")


def test_none_override_uses_environment():
    assert KafkaSettings.from_env({"KAFKA_PREFIX": "env."}, prefix=None).prefix == "env."


def test_invalid_override_names_keyword():
    with pytest.raises(ConfigurationError, match="security_protocol"):
        KafkaSettings.from_env({}, security_protocol="tls")


def test_unknown_override_raises_type_error():
    with pytest.raises(TypeError, match="bootstrap_server"):
        KafkaSettings.from_env({}, bootstrap_server="typo:9092")


def test_repr_hides_secrets():
    env = dict(
        AIVEN, KAFKA_RDKAFKA_SSL_KEY_PASSWORD="keypass-xyz", KAFKA_RDKAFKA_SASL_OAUTHBEARER_CLIENT_SECRET="oauth-xyz"
    )
    settings = KafkaSettings.from_env(env, ssl_certificate_pem=CERT, ssl_key_pem=KEY)
    for text in (repr(settings), str(settings)):
        for secret in ("hunter2-s3cret", "TOPSECRETKEY", "keypass-xyz", "oauth-xyz"):
            assert secret not in text
        assert "sasl_password='***'" in text


def test_repr_abbreviates_certificates():
    text = repr(KafkaSettings.from_env(HEROKU))
    assert "MIIBca" not in text
    assert f"ssl_ca_pem='<pem {len(CA)} bytes>'" in text


def test_empty_variables_count_as_unset():
    env = {var: "" for var in (*HEROKU, *AIVEN, "KAFKA_PREFIX", "KAFKA_RDKAFKA_LINGER_MS")}
    env["KAFKA_BOOTSTRAP_SERVERS"] = "fallback:9092"
    assert KafkaSettings.from_env(env) == KafkaSettings(bootstrap_servers="fallback:9092")


def test_settings_hashable_and_extra_read_only():
    settings = KafkaSettings.from_env({}, extra={"linger.ms": "5"})
    assert hash(settings) == hash(KafkaSettings.from_env({}, extra={"linger.ms": "5"}))
    with pytest.raises(TypeError):
        settings.extra["linger.ms"] = "10"


def test_extra_is_copied_from_caller():
    extra = {"linger.ms": "5"}
    settings = KafkaSettings(extra=extra)
    extra["linger.ms"] = "10"
    assert settings.extra["linger.ms"] == "5"


# Settings the clients own, and those the user's value wins for ---------------------------------


@pytest.mark.parametrize(
    "name, value",
    [
        ("MAX_POLL_INTERVAL_MS", "900000"),
        ("SESSION_TIMEOUT_MS", "30000"),
        ("HEARTBEAT_INTERVAL_MS", "3000"),
        ("AUTO_OFFSET_RESET", "earliest"),
        ("TOPIC_METADATA_REFRESH_INTERVAL_MS", "60000"),
    ],
)
def test_a_consumer_setting_the_user_gives_wins(name, value):
    from broker import KafkaBroker

    settings = KafkaSettings.from_env({f"KAFKA_RDKAFKA_{name}": value})
    config = KafkaBroker(settings=settings).consumer_config("q")
    assert config[name.lower().replace("_", ".")] == value


@pytest.mark.parametrize(
    "name, value",
    [
        ("ENABLE_AUTO_COMMIT", "true"),
        ("GROUP_ID", "mine"),
        ("ACKS", "1"),
        ("ENABLE_IDEMPOTENCE", "false"),
        ("DELIVERY_TIMEOUT_MS", "60000"),
        ("AUTO_OFFSET_RESET", "latest"),
    ],
)
def test_a_setting_the_guarantees_depend_on_is_refused_naming_its_variable(name, value):
    from broker import KafkaBroker

    settings = KafkaSettings.from_env({f"KAFKA_RDKAFKA_{name}": value})
    with pytest.raises(ConfigurationError, match=f"KAFKA_RDKAFKA_{name}"):
        KafkaBroker(settings=settings)


def test_the_result_backend_refuses_what_its_producer_owns():
    from broker import KafkaResultBackend

    with pytest.raises(ConfigurationError, match="KAFKA_RDKAFKA_ACKS"):
        KafkaResultBackend(settings=KafkaSettings.from_env({"KAFKA_RDKAFKA_ACKS": "0"}))


@pytest.mark.parametrize(
    "name, value", [("GROUP_ID", "mine"), ("ENABLE_AUTO_COMMIT", "true"), ("AUTO_OFFSET_RESET", "latest")]
)
def test_the_result_backend_refuses_what_its_reply_listener_owns(name, value):
    from broker import KafkaResultBackend

    with pytest.raises(ConfigurationError, match=f"KAFKA_RDKAFKA_{name}"):
        KafkaResultBackend(settings=KafkaSettings.from_env({f"KAFKA_RDKAFKA_{name}": value}))


def test_a_reply_listener_setting_the_user_gives_wins():
    from broker.replies import listener_config

    settings = KafkaSettings.from_env(
        {"KAFKA_RDKAFKA_FETCH_WAIT_MAX_MS": "20", "KAFKA_RDKAFKA_AUTO_OFFSET_RESET": "earliest"}
    )
    config = listener_config(settings.client_config())
    assert (config["fetch.wait.max.ms"], config["group.id"], config["enable.auto.commit"]) == (
        "20",
        "kafka-tasks-reply-listener",
        False,
    )


def test_the_owned_settings_stay_as_the_broker_needs_them():
    from broker import KafkaBroker

    config = KafkaBroker(bootstrap_servers="127.0.0.1:1").consumer_config("q")
    assert (config["enable.auto.commit"], config["group.id"], config["auto.offset.reset"]) == (False, "q", "earliest")
