"""The reference system's periodic upkeep (queue ``maintenance``), sent by the clock process.

``forget_abandoned_keys`` runs every hour: a request with an ``Idempotency-Key`` reserves its key
(``submitting``) before it sends its task; a sender that dies before Kafka confirms leaves the
reservation behind.  After a minute the next request with the key takes it over; after a day
nothing will, and the row is forgotten.
"""

from __future__ import annotations

import datetime as dt
import logging

from .app import actors, current_system, schedules

logger = logging.getLogger(__name__)

QUEUE = "maintenance"

#: How long a reservation whose send never completed is kept.
ABANDONED_FOR = dt.timedelta(days=1)


@schedules.cron("0 * * * *", name="forget abandoned keys")
@actors.actor(queue_name=QUEUE, max_retries=3)
def forget_abandoned_keys() -> int:
    """Forgets ``Idempotency-Key`` reservations abandoned for over a day.  Idempotent: a tick run
    twice forgets nothing the second time."""
    forgotten = current_system().store.forget_abandoned(before=dt.datetime.now(dt.UTC) - ABANDONED_FOR)
    if forgotten:
        logger.info("forgot %d abandoned Idempotency-Key reservation(s)", forgotten)
    return forgotten
