"""kafka-tasks' broker package: Dramatiq on Apache Kafka.

A library on its own: it knows nothing of the actors and services that use it.
"""

from .broker import PARTITION_KEY, KafkaBroker
from .deadletters import DeadLetterInfo
from .producer import DeliveryFailed
from .results import REPLY_PARTITION, KafkaResultBackend, ReplyRouting
from .settings import ConfigurationError, KafkaSettings
from .topics import MissingTopics

__all__ = [
    # Brokers
    "KafkaBroker",
    "PARTITION_KEY",
    # Results
    "KafkaResultBackend",
    "ReplyRouting",
    "REPLY_PARTITION",
    # Settings
    "ConfigurationError",
    "KafkaSettings",
    # Errors
    "DeliveryFailed",
    "MissingTopics",
    # Dead letters
    "DeadLetterInfo",
]
