"""broker.followups: which message owes a send Kafka refused (pure logic, no Kafka)."""

from __future__ import annotations

from dramatiq.middleware import CurrentMessage

from broker import KafkaBroker
from broker.followups import FollowUpsBegin, FollowUpsEnd, owe, owner


class Debtor:
    def __init__(self):
        self.owed = []

    def owe(self, send):
        self.owed.append(send)


def test_the_markers_stay_first_and_last_as_middleware_is_added():
    broker = KafkaBroker(bootstrap_servers="127.0.0.1:1")
    broker.add_middleware(CurrentMessage())
    assert isinstance(broker.middleware[0], FollowUpsEnd)
    assert isinstance(broker.middleware[-1], FollowUpsBegin)
    assert any(isinstance(m, CurrentMessage) for m in broker.middleware[1:-1])


def test_a_message_owes_its_own_retry():
    message = Debtor()
    owe("send", message)
    assert message.owed == ["send"]


def test_a_send_during_follow_ups_is_owed_by_the_message_processed():
    processed = Debtor()
    FollowUpsBegin().after_process_message(None, processed)
    try:
        assert owner() is processed
        owe("next step")  # a pipeline's next message: not itself being processed
    finally:
        FollowUpsEnd().after_process_message(None, processed)
    assert processed.owed == ["next step"]


def test_a_send_after_the_follow_ups_is_not_owed_by_the_message_processed():
    processed = Debtor()
    FollowUpsBegin().after_process_message(None, processed)
    FollowUpsEnd().after_process_message(None, processed)
    # A send from the next actor's body (before its own follow-ups) fails that actor instead
    owe("a send from an actor's body")
    assert owner() is None and processed.owed == []
