"""kafka-tasks benchmarks: ``python -m benchmarks [--smoke] [--runs N] [--only NAME]``.

One module per scenario, each with a ``run(ctx)`` that returns rows (:mod:`benchmarks.rows`).
The runner (:mod:`benchmarks.__main__`) starts Kafka, Redis and RabbitMQ as child processes
(:mod:`benchmarks.services`), runs the scenarios and writes ``docs/benchmarks.md`` with its plots
(:mod:`benchmarks.report`).  ``make bench`` sets everything up first; ``--smoke`` runs each
scenario for about a second, which is what ``tests/test_benchmarks.py`` does.
"""

#: The scenarios, in the order the report lists them.  Each name is a module of this package.
SCENARIOS = (
    "worker_throughput",
    "enqueue",
    "latency",
    "request_response",
    "http_signup",
    "delays",
    "scaling",
    "cluster",
    "system",
    "profiles",
)

__all__ = ["SCENARIOS"]
