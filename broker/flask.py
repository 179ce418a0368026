"""kafka-tasks in a Flask app, the way Flask extensions work: ``KafkaTasks(app)`` or ``init_app``.

::

    tasks = KafkaTasks()

    @tasks.actor(queue_name="emails")
    def send_welcome(email):
        sender = current_app.config["MAIL_FROM"]  # actors run inside the app context
        ...

    def create_app():
        app = Flask(__name__)
        app.config.from_prefixed_env()  # FLASK_KAFKA_TASKS_URL=... becomes KAFKA_TASKS_URL
        tasks.init_app(app)
        app.register_blueprint(tasks.status_blueprint(), url_prefix="/tasks")

        @app.post("/signup")
        def signup():
            return tasks.enqueue(send_welcome, request.json["email"])  # 202 once Kafka has it, or 503

        return app

Then ``flask --app yourapp kafka-tasks worker`` runs the workers, and ``flask --app yourapp
kafka-tasks release`` makes the topics and the status tables (the ``kafka-tasks`` command's own
code, run for this app).

Configuration comes from ``app.config``: ``KAFKA_TASKS_<NAME>`` is what the environment variable
``KAFKA_<NAME>`` is to ``KafkaSettings`` (``KAFKA_TASKS_URL``, ``KAFKA_TASKS_BOOTSTRAP_SERVERS``,
``KAFKA_TASKS_PREFIX``, ``KAFKA_TASKS_TRUSTED_CERT``, ``KAFKA_TASKS_RDKAFKA_<SETTING>``, ...), and
the environment fills in what the config leaves out.  Besides: ``KAFKA_TASKS_DELIVERY_TIMEOUT_MS``,
``KAFKA_TASKS_DATABASE_URL`` (the status store; ``DATABASE_URL``, else SQLite in the instance
folder) and ``KAFKA_TASKS_BROKER`` (``stub`` for Dramatiq's in-memory broker, in tests).

Actors are declared on the extension before any app exists, and sent through the broker of the
app in context (else the one last set up).  Kafka clients are made in each process at first use,
so after gunicorn forks.  Importing this module needs Flask; the rest of ``broker`` does not.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import dramatiq
from dramatiq.middleware import CurrentMessage
from flask import Blueprint, Flask, Response, current_app, has_app_context, jsonify, url_for

from .clientlog import ClientLog
from .lazy import LazyActor
from .lifecycle import Status, shown
from .producer import DeliveryFailed
from .settings import KafkaSettings
from .status import TaskStatus
from .submit import KeyReused, OutcomeUnknown, SubmissionInProgress, submit
from .taskstore import TaskStore

#: The prefix of the extension's keys in ``app.config``.
CONFIG_PREFIX = "KAFKA_TASKS_"

#: Where the extension keeps an app's parts: ``app.extensions[EXTENSION]``.
EXTENSION = "kafka_tasks"

#: Seconds a client should wait before sending again after a 503.
RETRY_AFTER_SECONDS = 5

#: Kafka not taking tasks is one condition, logged when it starts and once a minute while it lasts,
#: not once per request answered 503.
KAFKA_LOG = ClientLog("as the web process sees it")


@dataclass
class AppTasks:
    """What one app runs tasks with (``app.extensions["kafka_tasks"]``).

    Parameters:
      broker(Broker): Where its tasks are sent, with its actors declared.
      store(TaskStore): Where their statuses are kept, and whose key signs their ids.
      status_endpoint(str): The endpoint of a task's status, for the ``Location`` of a 202.
      extras(dict): Whatever else the application keeps beside them.
    """

    broker: dramatiq.Broker
    store: TaskStore
    status_endpoint: str = "kafka_tasks.task_status"
    extras: dict = field(default_factory=dict)


def settings_environ(config, environ=None) -> dict[str, str]:
    """The environment ``KafkaSettings`` reads for an app: ``environ`` (the process's by default),
    with each ``KAFKA_TASKS_<NAME>`` of the app's config as ``KAFKA_<NAME>`` over it."""
    env = dict(os.environ if environ is None else environ)
    for key, value in config.items():
        if key.startswith(CONFIG_PREFIX) and value is not None:
            env["KAFKA_" + key[len(CONFIG_PREFIX) :]] = str(value)
    return env


class AppContext(dramatiq.Middleware):
    """Runs each message inside the app context of the app whose broker runs it, as Flask's Celery
    pattern does: an actor reads ``current_app.config`` and uses the app's other extensions."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._pushed: contextvars.ContextVar = contextvars.ContextVar(f"app context of {app.name}", default=None)

    def before_process_message(self, broker, message):
        context = self.app.app_context()
        context.push()
        self._pushed.set(context)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        self._pop()

    def after_skip_message(self, broker, message):
        self._pop()

    def _pop(self) -> None:
        context = self._pushed.get()
        if context is not None:
            self._pushed.set(None)
            context.pop()


class FlaskActor(LazyActor):
    """An actor declared on the extension: sent through the broker of the app in context."""

    def __init__(self, *args, extension: KafkaTasks, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._extension = extension

    @property
    def bound(self) -> dramatiq.Actor:
        if has_app_context() and EXTENSION in current_app.extensions:
            return current_app.extensions[EXTENSION].broker.get_actor(self.actor_name)
        return super().bound


class KafkaTasks:
    """The Flask extension.

    Parameters:
      app(Flask|None): An app to set up now (else call :meth:`init_app`).
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._actors: dict[str, FlaskActor] = {}
        if app is not None:
            self.init_app(app)

    # Actors ------------------------------------------------------------------------------------

    def actor(
        self, fn=None, *, actor_name: str | None = None, queue_name: str = "default", priority: int = 0, **options
    ):
        """Declares an actor, as ``@dramatiq.actor`` does, before any app or broker exists.  Its
        status is tracked (``track_status=True``) unless told otherwise.

        Returns:
          FlaskActor: The actor (or a decorator that makes one).

        Raises:
          ValueError: If an actor of that name is declared already.
        """
        options.setdefault("track_status", True)

        def declare(fn) -> FlaskActor:
            declared = FlaskActor(
                fn, actor_name=actor_name, queue_name=queue_name, priority=priority, options=options, extension=self
            )
            if declared.actor_name in self._actors:
                raise ValueError(f"an actor named {declared.actor_name!r} is already declared")
            self._actors[declared.actor_name] = declared
            return declared

        return declare if fn is None else declare(fn)

    # Set-up ------------------------------------------------------------------------------------

    def init_app(
        self,
        app: Flask,
        *,
        broker: dramatiq.Broker | None = None,
        store: TaskStore | None = None,
        status_endpoint: str | None = None,
    ) -> AppTasks:
        """Sets the extension up for an app: its broker (built from the app's configuration unless
        handed one), the status store, the middleware that runs actors in the app context and
        records their statuses, the declared actors, and the ``kafka-tasks`` CLI group.

        Parameters:
          broker(Broker|None): A broker to use as it is (its middleware is the caller's), e.g. the
            reference system's.
          store(TaskStore|None): A status store to use.
          status_endpoint(str|None): The endpoint the 202's ``Location`` points at (by default
            the status blueprint's).

        Returns:
          The app's :class:`AppTasks`.

        Raises:
          ConfigurationError: If the Kafka settings are invalid, naming the setting.
        """
        config = app.config
        if store is None:
            store = TaskStore(config.get(CONFIG_PREFIX + "DATABASE_URL") or self._default_database(app))
        if broker is None:
            broker = self._build_broker(app, store)
        for declared in self._actors.values():
            declared.bind(broker)
        tasks = AppTasks(broker=broker, store=store, status_endpoint=status_endpoint or "kafka_tasks.task_status")
        app.extensions[EXTENSION] = tasks
        app.cli.add_command(_cli_group())
        return tasks

    @staticmethod
    def _default_database(app: Flask) -> str:
        url = os.environ.get("DATABASE_URL")
        if url:
            from .taskstore import sqlalchemy_url

            return sqlalchemy_url(url)
        return f"sqlite:///{Path(app.instance_path) / 'kafka-tasks.db'}"

    def _build_broker(self, app: Flask, store: TaskStore) -> dramatiq.Broker:
        config = app.config
        kind = str(config.get(CONFIG_PREFIX + "BROKER") or os.environ.get("KAFKA_TASKS_BROKER") or "kafka").lower()
        if kind == "stub":
            from dramatiq.brokers.stub import StubBroker

            broker = StubBroker()
        else:
            from .broker import KafkaBroker
            from .producer import DEFAULT_DELIVERY_TIMEOUT_MS

            env = settings_environ(config)
            timeout = int(env.get("KAFKA_DELIVERY_TIMEOUT_MS") or DEFAULT_DELIVERY_TIMEOUT_MS)
            broker = KafkaBroker(settings=KafkaSettings.from_env(env), delivery_timeout_ms=timeout)
        broker.add_middleware(CurrentMessage())
        broker.add_middleware(AppContext(app))
        broker.add_middleware(TaskStatus(store))
        return broker

    # Sending, and answering --------------------------------------------------------------------

    def app_tasks(self) -> AppTasks:
        """The current app's parts."""
        return current_app.extensions[EXTENSION]

    def enqueue(self, actor, *args, idempotency_key: str | None = None):
        """Sends a task and returns the answer a view gives: ``202`` with the task id, its status
        URL and ``Location`` once Kafka has the task; else a ``503`` with ``Retry-After``, which
        says whether Kafka may have stored it all the same (then with the task's id: sent again
        with the same ``idempotency_key``, it sends that task again, which cannot run twice).

        Parameters:
          actor: An actor declared on this extension (or on the app's broker).
          args: Its arguments (JSON-serialisable).
          idempotency_key(str|None): The client's key: a repeated key answers with the same task.

        Returns:
          The response, whole (a view returns it as it is).
        """
        tasks = self.app_tasks()
        bound = tasks.broker.get_actor(actor.actor_name)
        try:
            submission = submit(bound, *args, store=tasks.store, idempotency_key=idempotency_key)
        except OutcomeUnknown as e:
            KAFKA_LOG.report(logging.WARNING, "unconfirmed", f"did not confirm a send in time, answering 503: {e}")
            again = (
                "Send the same request again with the same Idempotency-Key: it sends this task again, which cannot "
                "run twice."
                if e.keyed
                else "Look at its status before sending it again: sent again without an Idempotency-Key, it is a "
                "new task."
            )
            url = url_for(tasks.status_endpoint, task_id=e.task_id)
            answer = unavailable(f"Kafka did not confirm the task in time; it may have stored it. {again}")
            body = {**answer.get_json(), "taskId": e.task_id, "statusUrl": url}
            return _json(body, 503, {"Retry-After": str(RETRY_AFTER_SECONDS), "Location": url})
        except DeliveryFailed as e:
            KAFKA_LOG.report(logging.WARNING, "unavailable", f"unavailable, answering 503: {e}")
            return unavailable("Kafka is unavailable; nothing was sent. Try again later.")
        except SubmissionInProgress:
            return error(409, "A request with this Idempotency-Key is still being submitted; try again shortly.")
        except KeyReused:
            return error(
                422,
                "The request is invalid: see errors.",
                errors={"headers": {"Idempotency-Key": ["Already used for a different request; use a new key."]}},
            )
        return accepted(submission.task_id, tasks.status_endpoint)

    def task_status(self, task_id: str) -> dict | None:
        """A task's status as a client sees it, or ``None`` for an id no task of this app has.

        A task with no row yet (no worker recorded it) whose signed id this app issued is
        ``queued``, made when its id says (see :mod:`broker.taskids`).
        """
        tasks = self.app_tasks()
        task = tasks.store.get_task(task_id)
        if task is None:
            issued = tasks.store.task_ids.issued(task_id, tasks.broker.get_declared_actors())
            if issued is None:
                return None
            return {
                "taskId": task_id,
                "kind": issued.kind,
                "status": Status.QUEUED.value,
                "result": None,
                "error": None,
                "createdAt": issued.created_at,
                "updatedAt": issued.created_at,
            }
        task = {**task, "status": shown(task["status"])}
        task.pop("requestFingerprint", None)
        return task

    def status_blueprint(self, name: str = "kafka_tasks") -> Blueprint:
        """A blueprint with one route, ``GET /<task_id>``: a task's status as JSON, or a JSON 404.
        Register it where you like (``url_prefix="/tasks"``)."""
        blueprint = Blueprint(name, __name__)

        @blueprint.get("/<string:task_id>")
        def task_status(task_id: str):
            task = self.task_status(task_id)
            if task is None:
                return error(404, f"No task {task_id}.")
            return {key: value.isoformat() if hasattr(value, "isoformat") else value for key, value in task.items()}

        return blueprint


def accepted(task_id: str, status_endpoint: str = "kafka_tasks.task_status") -> Response:
    """The ``202`` of a task Kafka has: its id, its status URL, and ``Location``."""
    url = url_for(status_endpoint, task_id=task_id)
    return _json({"taskId": task_id, "statusUrl": url}, 202, {"Location": url})


def error(code: int, message: str, *, errors: dict | None = None, headers: dict | None = None) -> Response:
    """An error answer in the shape flask-smorest gives: ``{"code", "status", "message", "errors"?}``."""
    from werkzeug.http import HTTP_STATUS_CODES

    body = {"code": code, "status": HTTP_STATUS_CODES.get(code, "Unknown Error"), "message": message}
    if errors:
        body["errors"] = errors
    return _json(body, code, headers)


def unavailable(message: str) -> Response:
    """A ``503`` that tells the client when to send again."""
    return error(503, message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def _json(body: dict, status: int, headers: dict | None = None) -> Response:
    """A JSON response, whole: a view (or flask-smorest's response decorator) returns it as it is."""
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


# The CLI: `flask --app yourapp kafka-tasks ...`, the kafka-tasks command's code --------------------


def app_broker() -> dramatiq.Broker:
    """Loads the Flask app that ``FLASK_APP`` names and returns its broker: what a worker process
    started by ``flask kafka-tasks worker`` runs (``python -m broker.worker broker.flask:app_broker``)."""
    from flask.cli import ScriptInfo

    app = ScriptInfo(app_import_path=os.environ.get("FLASK_APP")).load_app()
    return app.extensions[EXTENSION].broker


def _cli_group():
    import click
    from flask.cli import AppGroup, ScriptInfo, with_appcontext

    group = AppGroup("kafka-tasks", help="Run this app's task workers, or make its topics and status tables.")

    @group.command("worker")
    @click.option("--queues", "-Q", multiple=True, help="A queue to listen to (repeat it; default: every one).")
    @click.option("--processes", "-p", type=int, default=os.cpu_count() or 1, help="Worker processes.")
    @click.option("--threads", "-t", type=int, default=8, help="Worker threads per process.")
    @click.option("--verbose", "-v", is_flag=True, help="Log at DEBUG level.")
    @click.pass_context
    def worker_command(context, queues, processes, threads, verbose):
        """Run worker processes for this app's actors; one SIGTERM stops them cleanly."""
        from . import worker

        info = context.find_object(ScriptInfo)
        if info is not None and info.app_import_path:
            os.environ["FLASK_APP"] = info.app_import_path  # the worker processes load the same app
        worker.configure_logging(verbose)
        sys.exit(worker.serve(f"{__name__}:app_broker", list(queues) or None, processes, threads, verbose))

    @group.command("release")
    @with_appcontext
    def release_command():
        """Create the status tables and the Kafka topics (or print how, where the cluster may not)."""
        from .release import release_topics

        tasks = current_app.extensions[EXTENSION]
        tasks.store.create_schema()
        print("task status tables ready", flush=True)
        if hasattr(tasks.broker, "ensure_topics"):
            sys.exit(release_topics(tasks.broker, command="flask kafka-tasks release"))

    return group


__all__ = ["AppContext", "AppTasks", "KafkaTasks", "accepted", "app_broker", "error", "unavailable"]
