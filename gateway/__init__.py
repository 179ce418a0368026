"""The HTTP front door of the kafka-tasks reference system.

``create_app()`` builds the Flask app: one flask-smorest blueprint per resource, errors answered
as JSON from :mod:`gateway.errors`.  Importing this package has no side effects: the broker is
built when an app is created, and Kafka clients only on first use, in the process that uses them
(after gunicorn forks).
"""

from __future__ import annotations

import os

from flask import Flask
from flask_smorest import Api

#: Settings a deployment may override with ``FLASK_``-prefixed variables or ``create_app(config)``.
DEFAULTS = {
    #: Bodies are small JSON documents; anything larger is refused with 413 before it is parsed.
    "MAX_CONTENT_LENGTH": 64 * 1024,
    #: How long ``GET /api/users/<id>`` waits for the auth service (ms); ``USER_LOOKUP_TIMEOUT_MS``.
    "USER_LOOKUP_TIMEOUT_MS": 5_000,
    "API_TITLE": "kafka-tasks",
    "API_VERSION": "1",
    "OPENAPI_VERSION": "3.1.0",
    "OPENAPI_URL_PREFIX": "/api",
    "OPENAPI_JSON_PATH": "openapi.json",
    "OPENAPI_SWAGGER_UI_PATH": "docs",
    "OPENAPI_SWAGGER_UI_URL": "https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
}


def create_app(config: dict | None = None) -> Flask:
    """Creates the gateway.

    Parameters:
      config(dict): Settings that take precedence over the defaults and the environment.

    Returns:
      The Flask application, with the broker, result backend and store in
      ``app.extensions["kafka_tasks"]``.
    """
    app = Flask(__name__)
    app.config.update(DEFAULTS)
    app.config.from_prefixed_env()
    if os.environ.get("USER_LOOKUP_TIMEOUT_MS"):
        app.config["USER_LOOKUP_TIMEOUT_MS"] = os.environ["USER_LOOKUP_TIMEOUT_MS"]
    app.config.update(config or {})
    app.config["USER_LOOKUP_TIMEOUT_MS"] = int(app.config["USER_LOOKUP_TIMEOUT_MS"])

    # Imported here, not at the top: building the broker belongs to creating an app.
    from tasks import app as tasks_app

    from . import auth, errors, health, payments, statuses, users
    from .extension import KafkaTasks

    app.extensions["kafka_tasks"] = KafkaTasks(broker=tasks_app.broker, backend=tasks_app.backend)
    api = Api(app)
    # After Api(), whose own HTTPException handler this replaces: errors come from one place.
    errors.register(app)
    for resource in (auth, payments, statuses, users, health):
        api.register_blueprint(resource.blp)
    return app


__all__ = ["DEFAULTS", "create_app"]
