"""broker.lazy: actors declared before their broker, bound to it later (on Dramatiq's StubBroker)."""

from __future__ import annotations

import pytest
from dramatiq.brokers.stub import StubBroker

from broker.lazy import ActorNotBound, Actors


@pytest.fixture
def actors():
    return Actors()


def test_an_actor_declared_without_a_broker_cannot_send(actors):
    @actors.actor(queue_name="emails")
    def welcome(user_id):
        return f"welcome {user_id}"

    # Calling it runs the function, as calling an actor does
    assert welcome(7) == "welcome 7"
    with pytest.raises(ActorNotBound, match="welcome"):
        welcome.send(7)


def test_bound_actors_send_through_their_broker(actors):
    @actors.actor(queue_name="emails", max_retries=3)
    def welcome(user_id):
        pass

    broker = StubBroker()
    actors.bind(broker)

    message = welcome.send(7)
    assert broker.queues["emails"].qsize() == 1
    assert (message.queue_name, message.actor_name, message.args) == ("emails", "welcome", (7,))
    assert broker.get_actor("welcome").options == {"max_retries": 3}


def test_options_given_at_bind_win_over_the_declared_ones(actors):
    @actors.actor(max_backoff=100)
    def pay():
        pass

    broker = StubBroker()
    actors.bind(broker, options={"pay": {"max_backoff": 5}})
    assert broker.get_actor("pay").options["max_backoff"] == 5


def test_binding_twice_to_one_broker_declares_once(actors):
    @actors.actor
    def ping():
        pass

    broker = StubBroker()
    actors.bind(broker)
    actors.bind(broker)
    assert list(broker.actors) == ["ping"]


def test_an_option_no_middleware_knows_is_refused_at_bind(actors):
    @actors.actor(no_such_option=True)
    def ping():
        pass

    with pytest.raises(ValueError, match="no_such_option"):
        actors.bind(StubBroker())


def test_two_actors_of_one_name_are_refused(actors):
    actors.actor(lambda: None, actor_name="same")
    with pytest.raises(ValueError, match="same"):
        actors.actor(lambda: None, actor_name="same")


def test_options_for_an_undeclared_actor_are_refused(actors):
    with pytest.raises(ValueError, match="nobody"):
        actors.bind(StubBroker(), options={"nobody": {}})
