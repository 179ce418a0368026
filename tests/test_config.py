"""tasks.config: the reference system's environment, read once into one object (no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker import ConfigurationError
from tasks.config import VARIABLES, Config, render_env_example, render_markdown_table

ROOT = Path(__file__).resolve().parent.parent


def test_database_url_defaults_to_sqlite_under_var():
    assert Config.from_env({}).database_url == "sqlite:///var/kafka-tasks.db"


def test_database_url_accepts_herokus_postgres_form():
    config = Config.from_env({"DATABASE_URL": "postgres://u:p@h:5432/d"})
    assert config.database_url == "postgresql+psycopg://u:p@h:5432/d"


def test_the_variables_defaults_are_the_configs_defaults():
    assert Config.from_env({}) == Config()


def test_defaults_are_the_documented_ones():
    config = Config.from_env({})
    documented = {variable.name: variable.default for variable in VARIABLES}
    assert str(config.delivery_timeout_ms) == documented["KAFKA_DELIVERY_TIMEOUT_MS"]
    assert str(config.user_lookup_timeout_ms) == documented["USER_LOOKUP_TIMEOUT_MS"]
    assert str(config.get_user_timeout_ms) == documented["GET_USER_TIMEOUT_MS"]
    assert str(config.payments_min_backoff_ms) == documented["PAYMENTS_MIN_BACKOFF_MS"]
    assert str(config.payments_max_backoff_ms) == documented["PAYMENTS_MAX_BACKOFF_MS"]
    assert config.database_url == documented["DATABASE_URL"]
    assert config.broker == documented["KAFKA_TASKS_BROKER"]
    assert config.kafka.bootstrap_servers == documented["KAFKA_BOOTSTRAP_SERVERS"]


def test_every_variable_is_read_from_the_given_environment():
    config = Config.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092",
            "KAFKA_DELIVERY_TIMEOUT_MS": "1500",
            "USER_LOOKUP_TIMEOUT_MS": "100",
            "GET_USER_TIMEOUT_MS": "200",
            "PAYMENTS_MIN_BACKOFF_MS": "10",
            "PAYMENTS_MAX_BACKOFF_MS": "20",
            "KAFKA_TASKS_BROKER": "stub",
            "DATABASE_URL": "sqlite:///elsewhere.db",
        }
    )
    assert (
        config.kafka.bootstrap_servers,
        config.delivery_timeout_ms,
        config.user_lookup_timeout_ms,
        config.get_user_timeout_ms,
        config.payments_min_backoff_ms,
        config.payments_max_backoff_ms,
        config.broker,
        config.database_url,
    ) == ("k1:9092", 1500, 100, 200, 10, 20, "stub", "sqlite:///elsewhere.db")


@pytest.mark.parametrize(
    "name, value",
    [
        ("GET_USER_TIMEOUT_MS", "abc"),
        ("USER_LOOKUP_TIMEOUT_MS", "0"),
        ("KAFKA_DELIVERY_TIMEOUT_MS", "-5"),
        ("PAYMENTS_MIN_BACKOFF_MS", "1.5"),
        ("KAFKA_TASKS_BROKER", "rabbitmq"),
        ("DATABASE_URL", "mysql://x/y"),
        ("KAFKA_SECURITY_PROTOCOL", "bogus"),
    ],
)
def test_an_invalid_value_is_refused_naming_its_variable(name, value):
    with pytest.raises(ConfigurationError, match=name):
        Config.from_env({name: value})


def test_a_database_url_with_a_password_is_not_shown():
    config = Config.from_env({"DATABASE_URL": "postgres://user:s3cret@db:5432/tasks"})
    assert "s3cret" not in repr(config)
    with pytest.raises(ConfigurationError) as refused:
        Config.from_env({"DATABASE_URL": "mysql://user:s3cret@db/tasks"})
    assert "s3cret" not in str(refused.value)


def test_backoffs_in_the_wrong_order_are_refused():
    with pytest.raises(ConfigurationError, match="PAYMENTS_MIN_BACKOFF_MS"):
        Config.from_env({"PAYMENTS_MIN_BACKOFF_MS": "5000", "PAYMENTS_MAX_BACKOFF_MS": "100"})


def test_env_example_is_rendered_from_the_one_list():
    assert (ROOT / ".env.example").read_text() == render_env_example(), (
        ".env.example differs from tasks/config.py: run `python -m tasks.config env > .env.example`"
    )


def test_the_configuration_doc_lists_every_variable_from_the_one_list():
    assert render_markdown_table() in (ROOT / "docs" / "configuration.md").read_text(), (
        "docs/configuration.md differs from tasks/config.py: paste `python -m tasks.config markdown` into it"
    )


def test_every_variable_is_in_the_env_example():
    example = render_env_example()
    for variable in VARIABLES:
        shown = variable.example if variable.name.endswith("<NAME>") else f"{variable.name}="
        assert shown in example, variable.name
