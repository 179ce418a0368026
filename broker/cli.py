"""Command-line entry points of the broker package.

Applications compose these into their own command (kafka-tasks does so in ``tasks/cli.py``), so that
``broker`` stays a library with no knowledge of the actors that use it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import devkafka


def load_broker(spec: str):
    """Imports ``MODULE[:ATTRIBUTE]`` and returns its broker, as Dramatiq's CLI reads its argument.

    ``ATTRIBUTE`` names a broker, or a function that sets one up (it may return it, or make it
    Dramatiq's global broker); without it, importing ``MODULE`` must set the global broker.  As with
    Dramatiq's CLI, modules are found in the current directory too.

    Raises:
      ImportError: If the module cannot be imported or sets up no broker.
    """
    import importlib

    import dramatiq

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())

    module_name, _, attribute = spec.partition(":")
    module = importlib.import_module(module_name)
    if attribute:
        found = getattr(module, attribute, None)
        if found is None:
            raise ImportError(f"module {module_name} has no attribute {attribute!r}")
        if isinstance(found, dramatiq.Broker):
            return found
        if not callable(found):
            raise ImportError(f"{spec} is neither a broker nor a function that sets one up")
        made = found()
        if isinstance(made, dramatiq.Broker):
            return made
    # Read the global directly: get_broker() would make a RabbitMQ broker up if none was set.
    broker = dramatiq.broker.global_broker
    if broker is None:
        raise ImportError(f"{spec} set up no broker: name a broker or a setup function, as MODULE:ATTRIBUTE")
    return broker


def add_kafka_command(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``kafka``: run a local single-node Apache Kafka in the foreground."""
    parser = subparsers.add_parser(
        "kafka",
        help="run a local Apache Kafka broker (KRaft, single node) in the foreground",
        description=f"Run Apache Kafka {devkafka.KAFKA_VERSION} on 127.0.0.1 until SIGINT or SIGTERM.",
    )
    parser.add_argument("--port", type=int, default=9092, help="client port on 127.0.0.1 (default: 9092)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--data-dir",
        type=Path,
        default=Path("var/kafka"),
        help="where the broker keeps its data across restarts (default: var/kafka)",
    )
    where.add_argument("--ephemeral", action="store_true", help="use a throwaway data folder, removed on exit")
    parser.add_argument(
        "--fetch-only", action="store_true", help="fetch and cache the Kafka jars with Maven, then exit"
    )
    parser.add_argument(
        "--ssl-dir",
        type=Path,
        metavar="DIR",
        help="also serve TLS clients, with client certificates required (as Heroku does): DIR holds "
        "ca.pem (the CA of accepted client certificates), broker.pem and broker.key (PKCS#8)",
    )
    parser.add_argument("--ssl-port", type=int, metavar="PORT", help="the TLS port on 127.0.0.1 (default: --port + 1)")
    parser.add_argument(
        "--brokers",
        type=int,
        default=1,
        metavar="N",
        help="run a cluster of N brokers and a KRaft controller, on --port and the ports after it, with "
        "replication 3 (at most N) and min.insync.replicas 2 (default: 1, a single combined node)",
    )
    parser.add_argument(
        "--tenant-prefix",
        metavar="PREFIX",
        help="behave as a multi-tenant plan: the client certificate of --tenant-principal may use only topics "
        "and groups that start with PREFIX, and create none (needs --ssl-dir; the plaintext port stays the admin's)",
    )
    parser.add_argument(
        "--tenant-principal",
        metavar="DN",
        help="the tenant's client certificate subject, as Kafka names it (e.g. 'CN=my-app')",
    )
    parser.set_defaults(func=_run_kafka)


def _run_kafka(args: argparse.Namespace) -> int:
    if args.fetch_only:
        try:
            print(devkafka.kafka_classpath())
        except devkafka.LocalKafkaError as e:
            print(f"kafka-tasks kafka: error: {e}", file=sys.stderr)
            return 1
        return 0
    tls = None
    if args.ssl_port is not None and args.ssl_dir is None:
        print("kafka-tasks kafka: error: --ssl-port needs --ssl-dir", file=sys.stderr)
        return 2
    if args.ssl_dir is not None:
        try:
            tls = devkafka.TLSListener.from_dir(args.ssl_dir, args.port + 1 if args.ssl_port is None else args.ssl_port)
        except devkafka.LocalKafkaError as e:
            print(f"kafka-tasks kafka: error: {e}", file=sys.stderr)
            return 1
    tenant = None
    if (args.tenant_prefix is None) != (args.tenant_principal is None):
        print("kafka-tasks kafka: error: --tenant-prefix and --tenant-principal go together", file=sys.stderr)
        return 2
    if args.tenant_prefix is not None:
        from .tenancy import Tenant

        tenant = Tenant(prefix=args.tenant_prefix, principal=args.tenant_principal)
    if args.brokers < 1:
        print("kafka-tasks kafka: error: --brokers must be 1 or more", file=sys.stderr)
        return 2
    data_dir = None if args.ephemeral else args.data_dir
    return devkafka.run(port=args.port, data_dir=data_dir, tls=tls, tenant=tenant, brokers=args.brokers)


def add_worker_command(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``worker``: run Dramatiq worker processes for a module's actors."""
    parser = subparsers.add_parser(
        "worker",
        help="run worker processes for the actors of a module",
        description="Run Dramatiq workers on Kafka. One SIGTERM to the process group stops them cleanly "
        "within 25 s, as Heroku sends it.",
    )
    parser.add_argument(
        "module",
        metavar="MODULE[:ATTRIBUTE]",
        help="the module that declares the actors, and the broker or setup function in it "
        "(as Dramatiq's CLI takes them)",
    )
    parser.add_argument("--queues", "-Q", nargs="+", metavar="QUEUE", help="listen to these queues only")
    parser.add_argument(
        "--processes",
        "-p",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="the number of worker processes (default: the number of CPUs)",
    )
    parser.add_argument(
        "--threads",
        "-t",
        type=int,
        default=8,
        metavar="N",
        help="the number of worker threads per process (default: 8)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log at DEBUG level")
    parser.set_defaults(func=_run_worker)


def _run_worker(args: argparse.Namespace) -> int:
    from . import worker

    worker.configure_logging(args.verbose)
    return worker.serve(args.module, args.queues, args.processes, args.threads, args.verbose)


def add_clock_command(subparsers: argparse._SubParsersAction, *, default_module: str | None = None) -> None:
    """Adds ``clock``: send each schedule's messages when due, one leader among any number of clocks.

    Parameters:
      default_module(str|None): The module that sets up the application's broker and declares its
        schedules, used when none is given.
    """
    parser = subparsers.add_parser(
        "clock",
        help="send the messages of periodic tasks when they are due (run as many as you like: one leads)",
        description="Send each schedule's messages when due. Any number may run: the one that owns the clock "
        "topic's partition sends; another takes over within seconds when it dies. One SIGTERM stops it.",
    )
    parser.add_argument(
        "module",
        metavar="MODULE[:ATTRIBUTE]",
        nargs="?" if default_module else None,
        default=default_module,
        help="the module that declares the actors and the broker or setup function in it (as for worker)"
        + (f" (default: {default_module})" if default_module else ""),
    )
    parser.add_argument(
        "--schedules",
        default="schedules",
        metavar="NAME",
        help="the module's attribute that holds its schedules (default: schedules)",
    )
    parser.add_argument("--list", action="store_true", help="print each schedule with its next and last tick, and exit")
    parser.add_argument("--verbose", "-v", action="store_true", help="log at DEBUG level")
    parser.set_defaults(func=_run_clock)


def _clock_of(spec: str, attribute: str):
    import importlib

    from .broker import KafkaBroker
    from .clock import Clock
    from .schedules import Schedule

    broker = load_broker(spec)
    if not isinstance(broker, KafkaBroker):
        raise ImportError(f"{spec} set up no KafkaBroker (found {type(broker).__name__})")
    module = importlib.import_module(spec.partition(":")[0])
    schedules = getattr(module, attribute, None)
    if schedules is None or not all(isinstance(s, Schedule) for s in schedules):
        raise ImportError(f"module {module.__name__} has no schedules in {attribute!r} (a broker.schedules.Schedules)")
    return Clock(broker, schedules)


def _run_clock(args: argparse.Namespace) -> int:
    import datetime as dt
    import signal
    import threading

    from . import worker

    worker.configure_logging(args.verbose)
    try:
        clock = _clock_of(args.module, args.schedules)
    except Exception as e:  # one line: a bad module, or a configuration error
        print(f"kafka-tasks clock: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    try:
        if args.list:
            rows = [("SCHEDULE", "WHEN", "NEXT TICK (UTC)", "LAST TICK (UTC)")]
            rows += clock.listing(dt.datetime.now(dt.UTC), clock.read_state())
            widths = [max(len(row[i]) for row in rows) for i in range(3)]
            for row in rows:
                print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
            return 0
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda signum, frame: stop.set())
        clock.run(stop)
        return 0
    except Exception as e:
        print(f"kafka-tasks clock: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        clock.broker.close()


def add_status_command(subparsers: argparse._SubParsersAction, *, default_module: str | None = None) -> None:
    """Adds ``status``: the queues (waiting, delayed, dead letters) and the live workers, as /ops shows them."""
    parser = subparsers.add_parser(
        "status",
        help="print the queues (waiting, delayed, dead letters) and the live workers",
        description="The picture /ops shows, in the terminal: read from Kafka (offsets and the workers' reports).",
    )
    parser.add_argument(
        "module",
        metavar="MODULE[:ATTRIBUTE]",
        nargs="?" if default_module else None,
        default=default_module,
        help="the module that sets up the broker (as for worker)"
        + (f" (default: {default_module})" if default_module else ""),
    )
    parser.add_argument("--json", action="store_true", help="print JSON, for scripts")
    parser.add_argument(
        "--watch", type=float, nargs="?", const=2.0, metavar="SECONDS", help="print again every SECONDS (2)"
    )
    parser.set_defaults(func=_run_status)


def _run_status(args: argparse.Namespace) -> int:
    import json
    import time

    from .ops.text import render
    from .ops.view import OpsView

    view = None
    try:
        broker = _dlq_broker(args.module)
        view = OpsView(broker)
        while True:
            snapshot = view.snapshot()
            if args.json:
                print(json.dumps(snapshot, indent=2), flush=True)
            else:
                print(("\x1b[H\x1b[2J" if args.watch else "") + render(snapshot), flush=True)
            if not args.watch:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
    except Exception as e:  # one clear line, and a non-zero exit
        print(f"kafka-tasks status: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        if view is not None:
            view.close()
            view.broker.close()


def add_dlq_command(subparsers: argparse._SubParsersAction, *, default_module: str | None = None) -> None:
    """Adds ``dlq list`` and ``dlq replay``: a queue's dead letters, and sending them back.

    Parameters:
      default_module(str|None): The module that sets up the application's broker, used when
        ``--module`` is not given; without one, ``--module`` is required.
    """
    parser = subparsers.add_parser(
        "dlq",
        help="list a queue's dead letters, or replay them once their cause is fixed",
        description="Read a queue's dead-letter topic (<queue>.XQ) and send dead messages back to the queue.",
    )
    commands = parser.add_subparsers(dest="dlq_command", required=True)
    module_help = "the module that sets up the broker, as MODULE[:ATTRIBUTE]" + (
        f" (default: {default_module})" if default_module else ""
    )
    listing = commands.add_parser("list", help="list the dead letters of a queue, oldest first")
    replaying = commands.add_parser(
        "replay", help="send dead messages back to their queue (each once; skips those already replayed)"
    )
    replaying.add_argument(
        "--id",
        dest="ids",
        metavar="ID",
        action="append",
        type=lambda text: text.split(","),
        help="a dead letter to replay, by the ID that `dlq list` prints; repeat it, or separate "
        "IDs with commas (default: every one)",
    )
    for command, func in ((listing, _run_dlq_list), (replaying, _run_dlq_replay)):
        command.add_argument("queue", help="the queue name, as actors declare it")
        command.add_argument(
            "--module", "-m", default=default_module, required=default_module is None, help=module_help
        )
        command.set_defaults(func=func)


def _dlq_broker(module: str):
    from .broker import KafkaBroker
    from .dlq import DeadLetterError

    try:
        broker = load_broker(module)
    except ModuleNotFoundError:
        raise
    except ImportError:
        broker = None
    if not isinstance(broker, KafkaBroker):
        raise DeadLetterError(
            f"module {module} set no KafkaBroker as Dramatiq's broker (found {type(broker).__name__})"
        )
    return broker


def _run_dlq(args: argparse.Namespace, action) -> int:
    broker = None
    try:
        broker = _dlq_broker(args.module)
        action(broker)
        return 0
    except Exception as e:  # One clear line, and a non-zero exit.
        from .dlq import DeadLetterError
        from .producer import DeliveryFailed
        from .settings import ConfigurationError
        from .topics import MissingTopics

        known = isinstance(e, (DeadLetterError, DeliveryFailed, ConfigurationError, MissingTopics))
        print(
            f"kafka-tasks dlq {args.dlq_command}: error: {'' if known else type(e).__name__ + ': '}{e}", file=sys.stderr
        )
        return 1
    finally:
        if broker is not None:
            broker.close()


def _run_dlq_list(args: argparse.Namespace) -> int:
    from . import dlq

    def show(broker):
        letters = dlq.list_dead_letters(broker, args.queue)
        if letters:
            print(dlq.render_table(letters))
        print(f"{len(letters)} dead letter(s) in {dlq.dead_letter_topic(broker, args.queue)}.")

    return _run_dlq(args, show)


def _run_dlq_replay(args: argparse.Namespace) -> int:
    from . import dlq

    def send_back(broker):
        ids = None if args.ids is None else [text for texts in args.ids for text in texts if text.strip()]
        result = dlq.replay(broker, args.queue, ids)
        for letter in result.replayed:
            print(f"replayed {letter.id}: message {letter.message_id} ({letter.actor_name}) is back on {args.queue}")
        for letter, why in result.skipped:
            print(f"skipped {letter.id}: {why}")
        print(f"{len(result.replayed)} replayed, {len(result.skipped)} skipped.")

    return _run_dlq(args, send_back)
