"""What a deploy runs once before new code serves: every topic the application uses, ensured.

Where the cluster lets clients create topics, the missing ones are created.  Where it does not
(Heroku's multi-tenant plans), the release fails naming them, and prints the platform's commands
that create each topic (partitions, retention, compaction) and each consumer group, so that an
operator can run them and release again.  ``kafka-tasks release`` and ``flask kafka-tasks release``
both run :func:`release_topics`.
"""

from __future__ import annotations

import sys

from .topics import MissingTopics, creation_commands


def release_topics(broker, *, backend=None, clock=None, command: str = "kafka-tasks release") -> int:
    """Ensures the topics of the broker's queues, of the operations plane (its ops and control
    topics), of the result backend and of the clock, if given.

    Parameters:
      broker(KafkaBroker): Its declared queues' topics, and their consumer groups.
      backend(KafkaResultBackend|None): Its results topic.
      clock(Clock|None): The clock's topic and group.
      command(str): How the caller is named in the error line.

    Returns:
      The exit status: 0 once every topic exists, 1 if some are missing and may not be created.
    """
    from .ops.control import Control
    from .ops.reporter import ops_topic_spec
    from .topics import ensure_topics

    ensurers = [
        broker.ensure_topics,
        lambda: ensure_topics(broker.admin, [ops_topic_spec(broker)]),
        Control(broker).ensure_topic,
    ]
    groups = list(broker.consumer_groups())
    if backend is not None:
        ensurers.append(backend.ensure_topic)
    if clock is not None:
        ensurers.append(clock.ensure_topic)
        groups.append(clock.group)
    created, missing = [], []
    for ensure in ensurers:
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
    for line in creation_commands(specs, groups, prefix=broker.settings.prefix):
        print(f"  {line}", flush=True)
    names = ", ".join(sorted(spec.name for spec in specs))
    print(f"{command}: error: missing Kafka topics: {names}", file=sys.stderr, flush=True)
    return 1
