"""What the gateway talks to, kept in ``app.extensions["kafka_tasks"]``."""

from __future__ import annotations

from dataclasses import dataclass

import dramatiq
from dramatiq.results import ResultBackend
from flask import current_app

from tasks.store import Store, get_store


@dataclass(frozen=True)
class KafkaTasks:
    """The broker, result backend and store of one app.

    Parameters:
      broker(Broker): The broker tasks are sent through; its Kafka clients are per process.
      backend(ResultBackend): Where actors' results are read from.
    """

    broker: dramatiq.Broker
    backend: ResultBackend

    @property
    def store(self) -> Store:
        """This process's store (engines are not shared across forks), as ``submit`` uses it."""
        return get_store()


def kafka_tasks() -> KafkaTasks:
    """Returns the current app's :class:`KafkaTasks`."""
    return current_app.extensions["kafka_tasks"]
