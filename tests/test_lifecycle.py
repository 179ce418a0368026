"""tasks.lifecycle: the statuses and which may follow which (pure data)."""

from __future__ import annotations

import pytest

from broker.lifecycle import ALLOWED, FINAL, PUBLIC, SETTLED_FAILURES, Status, may_follow, shown, sources


def test_every_status_has_its_transitions_written_down():
    assert set(ALLOWED) == set(Status)


def test_success_is_never_replaced():
    assert not any(may_follow(new, Status.SUCCEEDED) for new in Status)


@pytest.mark.parametrize("end", sorted(FINAL))
@pytest.mark.parametrize("on_the_way", [Status.RUNNING, Status.RETRYING])
def test_a_status_on_the_way_never_replaces_an_end(end, on_the_way):
    assert not may_follow(on_the_way, end)


@pytest.mark.parametrize("failure", sorted(SETTLED_FAILURES))
def test_a_failed_or_dead_task_may_still_succeed_when_replayed(failure):
    assert may_follow(Status.SUCCEEDED, failure)


def test_queued_only_replaces_a_task_being_submitted():
    assert sources(Status.QUEUED) == {Status.SUBMITTING}


def test_every_end_follows_the_same_statuses_so_one_write_serves_them():
    assert all(sources(end) == sources(Status.SUCCEEDED) for end in FINAL)


def test_both_statuses_on_the_way_follow_the_same_statuses_so_one_write_serves_them():
    assert sources(Status.RETRYING) == sources(Status.RUNNING)


def test_a_task_being_submitted_is_shown_as_queued_and_not_listed():
    assert shown("submitting") == "queued"
    assert shown(Status.DEAD) == "dead"
    assert PUBLIC == ("unknown", "queued", "running", "retrying", "succeeded", "failed", "dead")


def test_a_task_whose_send_kafka_did_not_confirm_is_settled_by_its_worker_or_a_resend():
    assert {Status.RUNNING, Status.SUCCEEDED, Status.SUBMITTING} <= ALLOWED[Status.UNKNOWN]
    assert may_follow(Status.UNKNOWN, Status.SUBMITTING) and not may_follow(Status.UNKNOWN, Status.QUEUED)


def test_a_status_equals_its_stored_value():
    assert Status.RUNNING == "running" and Status("failed") is Status.FAILED
