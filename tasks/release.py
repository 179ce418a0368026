"""``kafka-tasks release``: what a deploy runs once before the new code serves (Procfile ``release``).

It creates the database schema and ensures every Kafka topic the services use.  Both steps are
idempotent, and any failure exits non-zero, so a platform stops the deploy.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("kafka_tasks.release")


def release(config=None) -> int:
    """Creates the schema and the topics.  Returns the exit status.

    Parameters:
      config(Config): The configuration; by default read from the environment.
    """
    from .app import build_system

    built = build_system(config)
    broker, backend, store = built.broker, built.backend, built.store
    try:
        applied = store.migrate()
        done = f"applied {', '.join(applied)}" if applied else "nothing to apply"
        print(
            f"database schema at revision {store.schema_revision()}, {done} "
            f"({store.engine.url.render_as_string(hide_password=True)})",
            flush=True,
        )
        if hasattr(broker, "ensure_topics"):
            from broker.clock import Clock
            from broker.release import release_topics

            from .app import schedules

            return release_topics(broker, backend=backend, clock=Clock(broker, schedules))
    finally:
        broker.close()
        store.engine.dispose()
    return 0
