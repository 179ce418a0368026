"""broker.clientlog: librdkafka's reports through Python logging, each condition once (no Kafka)."""

from __future__ import annotations

import logging

import pytest

from broker.clientlog import ClientLog


@pytest.fixture
def log():
    return ClientLog("consumer of q", window=60)


def records(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "broker.kafka"]


def test_a_condition_that_repeats_is_logged_when_it_starts_then_once_a_window(log, caplog):
    for second in range(0, 130, 1):
        log.report(logging.ERROR, "log FAIL", "Connect failed: Connection refused", now=second)
    assert records(caplog) == [
        "Kafka consumer of q: Connect failed: Connection refused",
        "Kafka consumer of q: Connect failed: Connection refused (59 more like it in the last 60 s)",
        "Kafka consumer of q: Connect failed: Connection refused (59 more like it in the last 60 s)",
    ]


def test_two_conditions_are_each_logged(log, caplog):
    log.report(logging.ERROR, "log FAIL", "refused", now=0)
    log.report(logging.WARNING, "error -187", "1/1 brokers are down", now=1)
    log.report(logging.ERROR, "log FAIL", "refused", now=2)
    assert len(records(caplog)) == 2


def test_working_again_is_said_once(log, caplog):
    caplog.set_level(logging.INFO, logger="broker.kafka")
    log.report(logging.ERROR, "log FAIL", "refused", now=0)
    log.report(logging.ERROR, "log FAIL", "refused", now=1)
    log.ok()
    log.ok()
    assert records(caplog)[-1] == "Kafka consumer of q works again (after 2 problem reports)."
    assert len(records(caplog)) == 2


def test_debug_reports_asked_for_all_pass(log, caplog):
    caplog.set_level(logging.DEBUG, logger="broker.kafka")
    for second in range(3):
        log.report(logging.DEBUG, "log FETCH", "fetching", now=second)
    assert len(records(caplog)) == 3


def test_a_condition_log_of_anything_names_its_subject_and_keeps_a_traceback(caplog):
    from broker.clientlog import ConditionLog

    log = ConditionLog("The database", logger=logging.getLogger("test.database"), window=60)
    error = ConnectionError("down")
    log.report(logging.ERROR, "down", "could not connect", exc_info=error, now=0)
    log.report(logging.ERROR, "down", "could not connect", exc_info=error, now=1)
    [line] = [r for r in caplog.records if r.name == "test.database"]
    assert line.getMessage() == "The database: could not connect" and line.exc_info[1] is error
