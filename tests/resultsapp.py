"""A result-backed worker module for tests that run requesters and responders in real processes.

Configured by the environment: ``KAFKA_BOOTSTRAP_SERVERS``, ``TEST_QUEUE`` and ``RESULTS_TOPIC``.
Run as a script, it is a requester: ``python -m tests.resultsapp TAG N`` sends ``N`` requests and
prints one JSON line of ``[sent, received]`` pairs.
"""

import json
import os
import sys

import dramatiq
from dramatiq.results import Results

from broker import KafkaBroker, KafkaResultBackend, ReplyRouting

broker = KafkaBroker(partitions=4)
backend = KafkaResultBackend(topic=os.environ.get("RESULTS_TOPIC", "dramatiq-results"), partitions=8)
broker.add_middleware(Results(backend=backend))
broker.add_middleware(ReplyRouting(backend))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=os.environ.get("TEST_QUEUE", "default"), store_results=True, max_retries=0)
def echo(value):
    return {"echo": value, "pid": os.getpid()}


def request(tag: str, count: int) -> list:
    messages = [echo.send(f"{tag}-{n}") for n in range(count)]
    return [
        [f"{tag}-{n}", m.get_result(backend=backend, block=True, timeout=30_000)["echo"]]
        for n, m in enumerate(messages)
    ]


if __name__ == "__main__":
    print(json.dumps(request(sys.argv[1], int(sys.argv[2]))), flush=True)
    backend.close()
    broker.close()
