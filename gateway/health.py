"""``/healthz`` (the process is alive) and ``/readyz`` (Kafka and the database answer)."""

from __future__ import annotations

import logging

from flask_smorest import abort
from marshmallow import Schema, fields

from broker import KafkaBroker
from tasks import migrations

from . import errors
from .extension import kafka_tasks, readiness
from .parsing import Blueprint

logger = logging.getLogger(__name__)

blp = Blueprint("health", __name__, description="Liveness and readiness.")

#: How long readiness waits for Kafka's metadata (s): a probe must answer before it is retried.
KAFKA_TIMEOUT_SECONDS = 2


class HealthSchema(Schema):
    status = fields.String(required=True)


class ReadinessSchema(Schema):
    kafka = fields.String(required=True)
    database = fields.String(required=True)


@blp.route("/healthz")
@blp.response(200, HealthSchema)
def healthz():
    """Tells that the process answers.

    Does no I/O.
    """
    return {"status": "ok"}


@blp.route("/readyz")
@blp.response(200, ReadinessSchema)
@errors.documented(blp, 503)
def readyz():
    """Tells whether the process can serve.

    Kafka must answer metadata within 2 s, and the database a query, with the schema the code needs.
    """
    checks = {"kafka": _check("kafka", _ping_kafka), "database": _check("database", _ping_database)}
    failed = sorted(name for name, outcome in checks.items() if outcome != "ok")
    if failed:
        abort(
            503,
            message=f"Not ready: {', '.join(failed)} unavailable.",
            errors=checks,
            headers={"Retry-After": str(errors.RETRY_AFTER_SECONDS)},
        )
    return checks


def _ping_kafka() -> None:
    broker = kafka_tasks().broker
    if isinstance(broker, KafkaBroker):  # other brokers (the StubBroker) have no cluster to ask
        broker.admin.list_topics(timeout=KAFKA_TIMEOUT_SECONDS)


class SchemaBehind(Exception):
    """The database's schema is older than the code's: ``release`` has not migrated it."""


def _ping_database() -> None:
    store = kafka_tasks().store
    store.ping()
    if not store.schema_is_current():
        raise SchemaBehind(
            f"schema revision {store.schema_revision()}, the code needs {migrations.head()}: run release"
        )


def _check(name: str, ping) -> str:
    """Runs one check; logs, in one line, only when its outcome changes (probes come every few
    seconds, and an outage is one event, not one traceback per probe)."""
    try:
        ping()
        outcome, detail = "ok", None
    except Exception as e:
        outcome, detail = f"unavailable ({type(e).__name__})", f"{type(e).__name__}: {e}"
    last = readiness()
    if last.get(name, "ok") != outcome:
        if detail is None:
            logger.info("Readiness: %s is available again.", name)
        else:
            logger.warning("Readiness: %s is unavailable: %s", name, detail)
    last[name] = outcome
    return outcome
