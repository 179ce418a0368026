"""What the gateway talks to, kept in ``app.extensions["kafka_tasks"]``."""

from __future__ import annotations

from dataclasses import dataclass, field

import dramatiq
from dramatiq.results import ResultBackend, Results
from flask import current_app

from tasks.config import Config
from tasks.store import Store


@dataclass(frozen=True)
class KafkaTasks:
    """The configuration, broker and store of one app.

    Parameters:
      config(Config): The reference system's configuration.
      broker(Broker): The broker tasks are sent through; its Kafka clients are per process.
      store(Store): The database statuses are read from.
    """

    config: Config
    broker: dramatiq.Broker
    store: Store
    #: The last outcome of each readiness check of this process, so a change is logged once.
    readiness: dict[str, str] = field(default_factory=dict, compare=False)

    def actor(self, name: str) -> dramatiq.Actor:
        """Returns the actor called ``name``, as declared on this app's broker."""
        return self.broker.get_actor(name)

    @property
    def backend(self) -> ResultBackend:
        """Where actors' results are read from: the backend of the broker's Results middleware."""
        return next(m.backend for m in self.broker.middleware if isinstance(m, Results))


def kafka_tasks() -> KafkaTasks:
    """Returns the current app's :class:`KafkaTasks`."""
    return current_app.extensions["kafka_tasks"]
