"""Command-line entry points of the broker package.

Applications compose these into their own command (kafka-tasks does so in ``tasks/cli.py``), so that
``broker`` stays a library with no knowledge of the actors that use it.
"""

from __future__ import annotations

import argparse
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
