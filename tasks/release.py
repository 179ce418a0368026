"""``kafka-tasks release``: what a deploy runs once before the new code serves (Procfile ``release``).

It creates the database schema and ensures every Kafka topic the services use.  Both steps are
idempotent, and any failure exits non-zero, so a platform stops the deploy.
"""

from __future__ import annotations

import logging
import sys

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
            return _ensure_topics(broker, backend)
    finally:
        broker.close()
        store.engine.dispose()
    return 0


def _ensure_topics(broker, backend) -> int:
    """Creates the topics, or, where the cluster may not (Heroku's multi-tenant plans), prints the
    commands that create them and their consumer groups, and fails naming them."""
    from broker import MissingTopics
    from broker.clock import CLOCK_GROUP, Clock
    from broker.topics import creation_commands

    from .app import schedules

    clock = Clock(broker, schedules)
    created, missing = [], []
    for ensure in (broker.ensure_topics, backend.ensure_topic, clock.ensure_topic):
        try:
            created += ensure()
        except MissingTopics as e:
            missing.append(e)
    if not missing:
        print(f"kafka topics ready ({len(created)} created)", flush=True)
        return 0
    specs = [spec for error in missing for spec in error.specs]
    print(
        f"The cluster does not let this app create topics ({missing[0].reason}). Create them, and the consumer "
        "groups, with:",
        flush=True,
    )
    groups = [*broker.consumer_groups(), CLOCK_GROUP]
    for command in creation_commands(specs, groups, prefix=broker.settings.prefix):
        print(f"  {command}", flush=True)
    names = ", ".join(sorted(spec.name for spec in specs))
    print(f"kafka-tasks release: error: missing Kafka topics: {names}", file=sys.stderr, flush=True)
    return 1
