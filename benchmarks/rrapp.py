"""The responder of the request/response benchmark: a get_user-like actor with results on Kafka."""

import os

import dramatiq
from dramatiq.results import Results

from broker import KafkaBroker, KafkaResultBackend, ReplyRouting

broker = KafkaBroker(partitions=4)
backend = KafkaResultBackend(topic=os.environ.get("RESULTS_TOPIC", "bench-results"))
broker.add_middleware(Results(backend=backend))
broker.add_middleware(ReplyRouting(backend))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=os.environ.get("BENCH_QUEUE", "bench_rr"), store_results=True, max_retries=0)
def get_user(user_id):
    return {"id": user_id, "name": f"user-{user_id}", "email": f"user{user_id}@example.com"}
