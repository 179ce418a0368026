"""The operations plane over Kafka: worker reports, pause commands, and what the pages show.

Workers publish reports to an ops topic and obey pause commands from a control topic
(:mod:`~broker.ops.reporter`, :mod:`~broker.ops.control`); a web process reads them back, with
each queue's offsets, and serves the dashboard and Prometheus metrics (:mod:`~broker.ops.web`,
which needs Flask, and :mod:`~broker.ops.metrics`); ``kafka-tasks status`` prints the same picture.
"""
