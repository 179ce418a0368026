"""The gateway's use of the library's Flask extension (:mod:`broker.flask`): the one way, used by us first.

The app's parts are in ``app.extensions["kafka_tasks"]`` (:class:`broker.flask.AppTasks`); the
reference system's configuration and the readiness checks' last outcomes ride along in its
``extras``.
"""

from __future__ import annotations

from dramatiq.results import ResultBackend, Results
from flask import current_app

from broker.flask import EXTENSION, AppTasks, KafkaTasks

#: The extension; ``gateway.create_app`` sets it up for each app it makes.
tasks = KafkaTasks()


def kafka_tasks() -> AppTasks:
    """Returns the current app's parts: its broker and store."""
    return current_app.extensions[EXTENSION]


def reference_config():
    """Returns the reference system's configuration (``tasks.config.Config``) of the current app."""
    return kafka_tasks().extras["config"]


def readiness() -> dict[str, str]:
    """The last outcome of each readiness check of this process, so a change is logged once."""
    return kafka_tasks().extras["readiness"]


def result_backend() -> ResultBackend:
    """Where actors' results are read from: the backend of the broker's Results middleware."""
    return next(m.backend for m in kafka_tasks().broker.middleware if isinstance(m, Results))
