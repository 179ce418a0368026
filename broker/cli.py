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


def add_kafka_command(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``kafka``: run a local single-node Apache Kafka in the foreground."""
    parser = subparsers.add_parser(
        "kafka",
        help="run a local Apache Kafka broker (KRaft, single node) in the foreground",
        description=f"Run Apache Kafka {devkafka.KAFKA_VERSION} on 127.0.0.1 until SIGINT or SIGTERM.",
    )
    parser.add_argument("--port", type=int, default=9092, help="client port on 127.0.0.1 (default: 9092)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--data-dir", type=Path, default=Path("var/kafka"),
                       help="where the broker keeps its data across restarts (default: var/kafka)")
    where.add_argument("--ephemeral", action="store_true", help="use a throwaway data folder, removed on exit")
    parser.add_argument("--fetch-only", action="store_true",
                        help="fetch and cache the Kafka jars with Maven, then exit")
    parser.set_defaults(func=_run_kafka)


def _run_kafka(args: argparse.Namespace) -> int:
    if args.fetch_only:
        try:
            print(devkafka.kafka_classpath())
        except devkafka.LocalKafkaError as e:
            print(f"kafka-tasks kafka: error: {e}", file=sys.stderr)
            return 1
        return 0
    return devkafka.run(port=args.port, data_dir=None if args.ephemeral else args.data_dir)


def add_worker_command(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``worker``: run Dramatiq worker processes for a module's actors."""
    parser = subparsers.add_parser(
        "worker",
        help="run worker processes for the actors of a module",
        description="Run Dramatiq workers on Kafka. One SIGTERM to the process group stops them cleanly "
                    "within 25 s, as Heroku sends it.",
    )
    parser.add_argument("module", help="the module that sets up the broker and declares the actors")
    parser.add_argument("--queues", "-Q", nargs="+", metavar="QUEUE", help="listen to these queues only")
    parser.add_argument("--processes", "-p", type=int, default=os.cpu_count() or 1, metavar="N",
                        help="the number of worker processes (default: the number of CPUs)")
    parser.add_argument("--threads", "-t", type=int, default=8, metavar="N",
                        help="the number of worker threads per process (default: 8)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log at DEBUG level")
    parser.set_defaults(func=_run_worker)


def _run_worker(args: argparse.Namespace) -> int:
    from . import worker

    worker.configure_logging(args.verbose)
    return worker.serve(args.module, args.queues, args.processes, args.threads, args.verbose)
