"""The actors of the kafka-tasks reference system."""
