"""The topics behind a Dramatiq queue, and making sure they exist.

A queue ``q`` is backed by:

* ``q``: the queue itself;
* ``q.DQ.<tier>``: its delay tiers (see :mod:`broker.delays`), kept longer than the longest delay;
* ``q.XQ``: its dead letters, kept 7 days like RabbitMQ's and Redis's.

Every name gets the ``KAFKA_PREFIX`` of the settings.  Where the cluster refuses to create topics
(Heroku's multi-tenant plans), :func:`ensure_topics` checks that they exist instead and names the
missing ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

#: Dead letters are kept for a week, like the RabbitMQ and Redis brokers do.
DEAD_LETTER_RETENTION_MS = 7 * 86_400_000

#: How long a topic creation or check may take.
ADMIN_TIMEOUT = 30


class MissingTopics(Exception):
    """Topics are missing and the cluster does not let this client create them.

    Parameters:
      topics(list[str]): Their full names.
      reason(str): What the cluster said.
      specs(list[TopicSpec]): What each should be, to create it by other means.
    """

    def __init__(self, topics: list[str], reason: str, specs: list[TopicSpec] | None = None) -> None:
        self.topics = topics
        self.reason = reason
        self.specs = specs or []
        super().__init__(
            f"missing Kafka topics: {', '.join(topics)} ({reason}); create them first, for example with "
            f"`heroku kafka:topics:create TOPIC` or your provider's console"
        )


@dataclass(frozen=True)
class TopicSpec:
    """A topic to ensure.

    Parameters:
      name(str): The full topic name, prefix included.
      partitions(int): How many partitions it gets when it is created.
      replication_factor(int): Its replication factor; -1 means the cluster's default.
      config(dict): Topic configuration such as ``retention.ms``.
    """

    name: str
    partitions: int = 1
    replication_factor: int = -1
    config: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


def ensure_topics(admin: AdminClient, specs: list[TopicSpec], timeout: float = ADMIN_TIMEOUT) -> list[str]:
    """Creates the topics that don't exist yet.

    Parameters:
      admin: An admin client for the cluster.
      specs: The topics to ensure.
      timeout: How long the whole call may take, in seconds.

    Returns:
      The names of the topics that were created by this call.

    Raises:
      MissingTopics: If some topics are missing and the cluster refused to create them.
      KafkaException: If the cluster cannot be reached.
      concurrent.futures.TimeoutError: If the cluster does not answer in time.
    """
    deadline = time.monotonic() + timeout

    def remaining() -> float:
        return max(0.1, deadline - time.monotonic())

    metadata = admin.list_topics(timeout=remaining()).topics
    wanted = [spec for spec in specs if spec.name not in metadata]
    # Topics another client created a moment ago may have no leader yet: wait for them too.
    unready = [spec.name for spec in specs if spec.name in metadata and not _has_leaders(metadata[spec.name])]
    if not wanted:
        _await_leaders(admin, unready, deadline)
        return []
    futures = admin.create_topics(
        [
            NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor, config=s.config)
            for s in wanted
        ],
        operation_timeout=remaining(),
        request_timeout=remaining(),
    )
    created, raced, refused = [], [], []
    for name, future in futures.items():
        try:
            future.result(remaining())
            created.append(name)
        except KafkaException as e:
            error = e.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                raced.append(name)  # another client made it a moment ago: it may have no leader yet
                continue
            if error.code() in (KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
                raise
            # Refused by the cluster: not authorized (Heroku), a policy, an impossible setting.
            refused.append((name, error.str()))
    if refused:
        names = sorted(name for name, _ in refused)
        raise MissingTopics(names, refused[0][1], [spec for spec in wanted if spec.name in names])
    _await_leaders(admin, created + raced + unready, deadline)
    return created


def _await_leaders(admin: AdminClient, topics: list[str], deadline: float) -> None:
    """Waits (until ``deadline``, at most) until the cluster's metadata shows every partition of the
    topics with a leader.  A client that subscribes to a topic created a moment ago would otherwise
    find it missing, log that, and retry its fetches only after a backoff."""
    while topics and time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=max(0.1, deadline - time.monotonic())).topics
        if all(name in metadata and _has_leaders(metadata[name]) for name in topics):
            return
        time.sleep(0.01)


def _has_leaders(topic) -> bool:
    return topic.error is None and bool(topic.partitions) and all(p.leader >= 0 for p in topic.partitions.values())


#: Heroku's bounds on a topic's retention (multi-tenant and standard plans): 6 hours to 2 weeks.
HEROKU_RETENTION_MS = (6 * 3_600_000, 14 * 86_400_000)


def creation_commands(specs: list[TopicSpec], groups: list[str], prefix: str = "") -> list[str]:
    """The Heroku CLI commands that create the given topics and consumer groups, where clients may
    not (multi-tenant plans).  Names are given without ``prefix``: the CLI adds the app's own.

    A retention is rounded into Heroku's bounds (:data:`HEROKU_RETENTION_MS`): a results topic kept
    10 minutes by the backend is kept at least 6 hours there, and its results still expire on time.
    """
    commands = []
    for spec in specs:
        name = spec.name[len(prefix) :] if prefix and spec.name.startswith(prefix) else spec.name
        command = f"heroku kafka:topics:create {name} --partitions {spec.partitions}"
        if "retention.ms" in spec.config:
            low, high = HEROKU_RETENTION_MS
            command += f" --retention-time {_duration(min(max(int(spec.config['retention.ms']), low), high))}"
        if "compact" in spec.config.get("cleanup.policy", ""):
            command += " --compaction"
        commands.append(command)
    commands += [f"heroku kafka:consumer-groups:create {group}" for group in groups]
    return commands


def _duration(ms: int) -> str:
    for unit, size in (("days", 86_400_000), ("hours", 3_600_000), ("minutes", 60_000)):
        if ms % size == 0:
            return f"'{ms // size} {unit}'"
    return f"'{ms} ms'"
