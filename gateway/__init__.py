"""The HTTP front door of the kafka-tasks reference system."""
