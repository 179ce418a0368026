"""The reference system's wiring: its broker, result backend, store and actors, built by one function.

Importing this module (or ``tasks.auth``, ``tasks.payments``) builds nothing, connects to nothing
and reads no environment variable: the actors are declared on :data:`actors`, a set that
:func:`build_system` binds to the broker it builds.  The worker command, ``release``, the
gateway's factory and the tests all build through it; ``kafka-tasks worker tasks.app:setup_broker``
builds from the environment, the way Dramatiq's CLI takes a setup function.  While an actor runs,
:func:`current_system` gives it the system of the broker that runs it (its store, its
configuration).  Kafka clients are still only created in the process that uses them, at first use.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass

import dramatiq
from dramatiq.middleware import CurrentMessage, Retries
from dramatiq.results import ResultBackend, Results

from broker.lazy import Actors
from broker.schedules import Schedules
from broker.status import TaskStatus

from .config import Config
from .store import Store

#: How long a result is kept (ms): Dramatiq's default.
RESULT_TTL_MS = 600_000

#: The reference system's actors, bound by :func:`build_system`.
actors = Actors()

#: Its periodic tasks, sent by ``kafka-tasks clock tasks.app:setup_broker``.
schedules = Schedules()

#: The modules that declare them.
ACTOR_MODULES = ("tasks.auth", "tasks.payments", "tasks.maintenance")


@dataclass(frozen=True)
class System:
    """What the reference system's actors run with: built by :func:`build_system`.

    Parameters:
      config(Config): Its configuration.
      broker(Broker): The broker its actors are bound to.
      backend(ResultBackend): Where results are stored and read.
      store(Store): Its database.
    """

    config: Config
    broker: dramatiq.Broker
    backend: ResultBackend
    store: Store

    def actor(self, declared) -> dramatiq.Actor:
        """Returns a declared actor (of :data:`actors`) as bound to this system's broker."""
        return self.broker.get_actor(declared.actor_name)


_running = threading.local()


class CurrentSystem(dramatiq.Middleware):
    """Makes a broker's :class:`System` current on a worker thread while it processes a message,
    as Dramatiq's ``CurrentMessage`` does for the message (and Flask pushes an app context): an
    actor finds its store and configuration with :func:`current_system`, whichever broker runs it.
    """

    def __init__(self) -> None:
        self.system: System | None = None

    def before_process_message(self, broker, message):
        _running.system = self.system

    def after_process_message(self, broker, message, *, result=None, exception=None):
        _running.system = None

    def after_skip_message(self, broker, message):
        _running.system = None


def current_system() -> System:
    """Returns the system of the message this thread is processing.

    Raises:
      RuntimeError: Outside a message (an actor's function called directly).
    """
    running = getattr(_running, "system", None)
    if running is None:
        raise RuntimeError(
            "no reference system is running this code: it runs inside a message of a broker "
            "built by tasks.app.build_system()"
        )
    return running


def build_system(config: Config | None = None, *, store: Store | None = None) -> System:
    """Builds the reference system: its broker, with its middleware, its actors bound to it, its
    result backend and its store.

    Parameters:
      config(Config): The configuration; by default read from the environment.
      store(Store): The database; by default ``Store(config.database_url)``.

    Raises:
      ConfigurationError: If the environment's configuration is invalid.
    """
    for module in ACTOR_MODULES:
        importlib.import_module(module)  # each declares its actors on `actors`
    config = config or Config.from_env()
    store = store or Store(config.database_url)
    if config.broker == "stub":
        from dramatiq.brokers.stub import StubBroker
        from dramatiq.results.backends import StubBackend

        broker, backend = StubBroker(), StubBackend()
        broker.add_middleware(Results(backend=backend, result_ttl=RESULT_TTL_MS))
    else:
        from broker import KafkaBroker, KafkaResultBackend, ReplyRouting
        from broker.ops.reporter import OpsReporter

        broker = KafkaBroker(settings=config.kafka, delivery_timeout_ms=config.delivery_timeout_ms)
        backend = KafkaResultBackend(settings=config.kafka, result_ttl=RESULT_TTL_MS)
        broker.add_middleware(Results(backend=backend, result_ttl=RESULT_TTL_MS))
        broker.add_middleware(ReplyRouting(backend))
        # Worker processes report to the ops topic and obey pause commands (web processes do not).
        broker.add_middleware(OpsReporter())
    context = CurrentSystem()
    broker.add_middleware(CurrentMessage())
    broker.add_middleware(context)
    # Dramatiq runs after_* hooks in reverse order: placed before Retries, TaskStatus sees a
    # message only once Retries has decided whether it fails for good.
    broker.add_middleware(TaskStatus(store), before=Retries)
    actors.bind(
        broker,
        options={
            "process_payment": {
                "min_backoff": config.payments_min_backoff_ms,
                "max_backoff": config.payments_max_backoff_ms,
            }
        },
    )
    built = System(config=config, broker=broker, backend=backend, store=store)
    context.system = built
    return built


def build_broker(config: Config | None = None, *, store: Store | None = None) -> dramatiq.Broker:
    """Returns the broker of :func:`build_system`: what the worker command and ``dlq`` need."""
    return build_system(config, store=store).broker


def setup_broker() -> dramatiq.Broker:
    """Builds the broker from the environment and makes it Dramatiq's global broker: what
    ``kafka-tasks worker tasks.app:setup_broker`` and ``kafka-tasks dlq`` run."""
    broker = build_broker()
    dramatiq.set_broker(broker)
    return broker
