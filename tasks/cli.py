"""``kafka-tasks``: the command line of the reference system."""

from __future__ import annotations

import argparse
import sys

from broker import cli as broker_cli


def build_parser() -> argparse.ArgumentParser:
    """Returns the ``kafka-tasks`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="kafka-tasks", description="Background tasks on Apache Kafka.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    broker_cli.add_kafka_command(subparsers)
    broker_cli.add_worker_command(subparsers)
    broker_cli.add_dlq_command(subparsers, default_module="tasks.app:setup_broker")
    broker_cli.add_clock_command(subparsers, default_module="tasks.app:setup_broker")
    broker_cli.add_status_command(subparsers, default_module="tasks.app:setup_broker")
    release = subparsers.add_parser("release", help="create the database schema and the Kafka topics (idempotent)")
    release.set_defaults(func=_run_release)
    run = subparsers.add_parser(
        "run",
        help="run the whole system here, as `make run` does: a local Kafka (unless KAFKA_URL or "
        "KAFKA_BOOTSTRAP_SERVERS names one), release, then the Procfile's services; .env is read by every part",
    )
    run.set_defaults(func=_run_local)
    return parser


def _run_local(args: argparse.Namespace) -> int:
    from .localrun import main

    return main()


def _run_release(args: argparse.Namespace) -> int:
    from .release import release

    try:
        return release()
    except Exception as e:  # One clear line for the deploy log, and a non-zero exit.
        print(f"kafka-tasks release: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Runs ``kafka-tasks`` and returns its exit status."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
