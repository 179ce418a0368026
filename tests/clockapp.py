"""An application with a periodic task, for tests that run `kafka-tasks clock` in real processes.

Configured by the environment: ``KAFKA_BOOTSTRAP_SERVERS`` and ``KAFKA_PREFIX`` (its cluster),
``TICKS_DB`` (the SQLite file where each run of ``record_tick`` inserts a row), ``TICK_QUEUE``.
Each tick's run is a row: its message id, the tick, when the message was sent and when it ran.
Rows are inserted without any uniqueness, so a tick run twice shows as two rows.
"""

import datetime as dt
import os
import sqlite3
import time

import dramatiq
from dramatiq.middleware import CurrentMessage

from broker import KafkaBroker
from broker.clock import TICK_OPTION
from broker.lazy import Actors
from broker.schedules import Schedules

TABLE = "CREATE TABLE IF NOT EXISTS ticks (message_id TEXT, tick TEXT, sent_ms INTEGER, ran_ms INTEGER)"

actors = Actors()
schedules = Schedules()


@schedules.every(dt.timedelta(seconds=1), name="every second", missed="all")
@actors.actor(queue_name=os.environ.get("TICK_QUEUE", "ticks"), max_retries=0)
def record_tick():
    message = CurrentMessage.get_current_message()
    with sqlite3.connect(os.environ["TICKS_DB"], timeout=30) as db:
        db.execute(TABLE)
        db.execute(
            "INSERT INTO ticks VALUES (?, ?, ?, ?)",
            (message.message_id, message.options[TICK_OPTION], message.message_timestamp, int(time.time() * 1000)),
        )


def setup() -> KafkaBroker:
    """Builds the broker (once) and makes it Dramatiq's global broker."""
    broker = KafkaBroker(partitions=2)
    broker.add_middleware(CurrentMessage())
    actors.bind(broker)
    dramatiq.set_broker(broker)
    return broker
