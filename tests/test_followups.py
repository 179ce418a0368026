"""broker.followups: which message owes a send Kafka refused (pure logic, no Kafka)."""

from __future__ import annotations

import pytest
from dramatiq.middleware import CurrentMessage

from broker import DeliveryFailed, KafkaBroker
from broker.followups import FollowUps


class Message:
    """Stands for a message proxy a consumer handed out."""


class Sends:
    """A send that Kafka refuses until told otherwise, counting its attempts."""

    def __init__(self, refused: bool = True) -> None:
        self.refused = refused
        self.attempts = 0

    def __call__(self):
        self.attempts += 1
        if self.refused:
            raise DeliveryFailed("refused")
        return "sent"


def test_the_broker_middleware_is_what_was_added():
    broker = KafkaBroker(bootstrap_servers="127.0.0.1:1", middleware=[])
    current = CurrentMessage()
    broker.add_middleware(current)
    assert broker.middleware == [current]


def test_a_message_owes_its_own_retry():
    follow_ups, message, retry = FollowUps(), Message(), Sends()
    with follow_ups.of(message), pytest.raises(DeliveryFailed):
        follow_ups.send(retry)
    assert follow_ups.owes(message)

    retry.refused = False
    follow_ups.settle(message)
    assert retry.attempts == 2 and not follow_ups.owes(message)


def test_a_send_during_follow_ups_is_owed_by_the_message_processed():
    follow_ups, processed = FollowUps(), Message()
    next_step = Sends()  # a pipeline's next message: not itself being processed
    with follow_ups.of(processed):
        assert follow_ups.current is processed
        with pytest.raises(DeliveryFailed):
            follow_ups.send(next_step)
    with pytest.raises(DeliveryFailed):
        follow_ups.settle(processed)
    assert next_step.attempts == 2 and follow_ups.owes(processed)


def test_a_send_after_the_follow_ups_is_not_owed_by_the_message_processed():
    follow_ups, processed = FollowUps(), Message()
    with follow_ups.of(processed):
        pass
    # A send from the next actor's body (before its own follow-ups) fails that actor instead
    with pytest.raises(DeliveryFailed):
        follow_ups.send(Sends())
    assert follow_ups.current is None and not follow_ups.owes(processed)


def test_a_send_made_once_is_not_made_again_for_the_same_message():
    follow_ups, message, result = FollowUps(), Message(), Sends(refused=False)
    with follow_ups.of(message):
        assert follow_ups.send(result, once="failure result") == "sent"
    with follow_ups.of(message):
        assert follow_ups.send(result, once="failure result") is None
    assert result.attempts == 1


def test_an_owed_once_send_is_made_by_settling_not_again():
    follow_ups, message, result = FollowUps(), Message(), Sends()
    with follow_ups.of(message), pytest.raises(DeliveryFailed):
        follow_ups.send(result, once="failure result")
    result.refused = False
    with follow_ups.of(message):
        follow_ups.send(result, once="failure result")  # the nack tried again: owed, not sent twice
    follow_ups.settle(message)
    assert result.attempts == 2 and not follow_ups.owes(message)
