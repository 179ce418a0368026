"""The HTTP front door of the kafka-tasks reference system.

``create_app()`` builds the Flask app: one flask-smorest blueprint per resource, errors answered
as JSON from :mod:`gateway.errors`.  Importing this package has no side effects: the broker is
built when an app is created (or handed to the factory), and Kafka clients only on first use, in
the process that uses them (after gunicorn forks).
"""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

#: The app's Flask and flask-smorest settings.
DEFAULTS = {
    #: Bodies are small JSON documents; anything larger is refused with 413 before it is parsed.
    "MAX_CONTENT_LENGTH": 64 * 1024,
    "API_TITLE": "kafka-tasks",
    "API_VERSION": "1",
    "OPENAPI_VERSION": "3.1.0",
    "OPENAPI_URL_PREFIX": "/api",
    "OPENAPI_JSON_PATH": "openapi.json",
    "OPENAPI_SWAGGER_UI_PATH": "docs",
    #: Served by the app itself (gateway.apidocs): the page works offline.
    "OPENAPI_SWAGGER_UI_URL": "/api/docs/assets/",
}


def create_app(config=None, *, broker=None, store=None) -> Flask:
    """Creates the gateway, the way Flask's tutorial builds apps: handed its parts, or building them.

    Parameters:
      config(tasks.config.Config): The configuration; by default read from the environment.
      broker(Broker): The broker tasks are sent through, with the reference system's actors
        declared on it; by default the one ``tasks.app.build_system(config, store=store)`` builds.
      store(Store): The database; by default the one the system was built with, or
        ``Store(config.database_url)`` beside a broker handed in.

    Returns:
      The Flask application, set up by the library's Flask extension (``gateway.extension.tasks``),
      with its parts in ``app.extensions["kafka_tasks"]``.

    Raises:
      ConfigurationError: If the environment's configuration is invalid.
    """
    from tasks import app as tasks_app
    from tasks.config import Config

    from . import apidocs, auth, errors, health, payments, statuses, users
    from .bodies import BoundedBody
    from .extension import tasks
    from .parsing import AsciiInteger

    config = config or Config.from_env()
    if broker is None:
        built = tasks_app.build_system(config, store=store)
        broker, store = built.broker, built.store
    elif store is None:
        from tasks.store import Store

        store = Store(config.database_url)

    app = Flask(__name__)
    app.config.update(DEFAULTS)
    app.wsgi_app = BoundedBody(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"])
    parts = tasks.init_app(app, broker=broker, store=store, status_endpoint="tasks.get_task")
    parts.extras.update(config=config, readiness={})
    app.url_map.converters["int"] = AsciiInteger  # before any route is made
    api = Api(app)
    # After Api(), whose own HTTPException handler this replaces: errors come from one place.
    errors.register(app)
    for resource in (auth, payments, statuses, users, health):
        api.register_blueprint(resource.blp)
    app.register_blueprint(apidocs.blp)  # not in the API's own document
    if hasattr(broker, "admin"):  # the ops pages read Kafka: not on the StubBroker
        from broker.ops.view import OpsView
        from broker.ops.web import init_ops

        init_ops(
            app,
            lambda: OpsView(broker, store=store, schedules=tasks_app.schedules),
            password=config.ops_password,
        )
    return app


__all__ = ["DEFAULTS", "create_app"]
