"""broker.messages: which decoded records a consumer may hand out (pure logic, no Kafka)."""

from __future__ import annotations

import json
import math

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import compute_backoff

from broker.messages import MAX_BACKOFF_OPTION, BadMessage, check_options, decode


@pytest.fixture
def broker():
    broker = StubBroker()

    @dramatiq.actor(broker=broker, queue_name="q")
    def pay(payload, key=None):
        pass

    return broker


def encoded(broker, **changes) -> bytes:
    fields = json.loads(broker.get_actor("pay").message({"amount": "1.00"}).encode())
    fields.update(changes)
    return json.dumps(fields).encode()


def test_a_well_formed_message_of_the_queue_is_decoded(broker):
    message = decode(encoded(broker), queue_name="q", broker=broker)
    assert (message.actor_name, message.args) == ("pay", ({"amount": "1.00"},))


@pytest.mark.parametrize("value", [b"\xff not json", b"[]", None])
def test_an_undecodable_value_says_so(broker, value):
    with pytest.raises(BadMessage, match="^undecodable message: DecodeError"):
        decode(value, queue_name="q", broker=broker)


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("options", None, "malformed message: options is null"),
        ("kwargs", [], "malformed message: kwargs is an array"),
        ("actor_name", ["pay"], "malformed message: actor_name is an array"),
        ("message_id", 7, "malformed message: message_id is a number"),
        ("message_timestamp", "now", "malformed message: message_timestamp is a string"),
    ],
)
def test_a_field_of_the_wrong_type_is_refused(broker, field, value, reason):
    with pytest.raises(BadMessage) as refused:
        decode(encoded(broker, **{field: value}), queue_name="q", broker=broker)
    assert str(refused.value) == reason


@pytest.mark.parametrize("option, value", [("retries", "3"), ("retries", None), ("max_retries", True)])
def test_an_option_that_middleware_counts_with_must_be_a_number(broker, option, value):
    with pytest.raises(BadMessage, match=f"option {option} is"):
        decode(encoded(broker, options={option: value}), queue_name="q", broker=broker)


@pytest.mark.parametrize("option", ["min_backoff", "max_backoff", "max_retries", "time_limit", "max_age", "retries"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, -1])
def test_an_option_no_middleware_can_act_on_is_refused(broker, option, value):
    with pytest.raises(BadMessage, match=f"option {option} is .*not a finite number of at least 0"):
        decode(encoded(broker, options={option: value}), queue_name="q", broker=broker)


@pytest.mark.parametrize("option", ["min_backoff", "max_backoff"])
def test_a_backoff_so_large_that_doubling_it_overflows_is_refused(broker, option):
    with pytest.raises(BadMessage, match=f"option {option} is 1e[+]300, more than the largest"):
        check_options({option: 1e300})


def test_a_large_backoff_within_the_bound_computes(broker):
    check_options({"min_backoff": MAX_BACKOFF_OPTION, "max_backoff": MAX_BACKOFF_OPTION})
    # What Dramatiq's Retries does with it, after 40 retries: a finite delay
    _, delay = compute_backoff(40, factor=MAX_BACKOFF_OPTION, max_backoff=MAX_BACKOFF_OPTION)
    assert 0 < delay <= MAX_BACKOFF_OPTION


@pytest.mark.parametrize("eta", [math.inf, -math.inf, math.nan])
def test_an_eta_that_is_no_finite_number_is_refused(broker, eta):
    with pytest.raises(BadMessage, match="option eta is .*not a finite number"):
        decode(encoded(broker, options={"eta": eta}), queue_name="q", broker=broker)


def test_a_null_eta_is_dropped_as_dramatiq_drops_it(broker):
    message = decode(encoded(broker, options={"eta": None}), queue_name="q", broker=broker)
    assert "eta" not in message.options


def test_an_eta_that_is_no_number_is_dropped_with_dramatiqs_warning(broker, caplog):
    message = decode(encoded(broker, options={"eta": "tomorrow"}), queue_name="q", broker=broker)
    assert "eta" not in message.options
    assert "Invalid eta value" in caplog.text and "'tomorrow'" in caplog.text


def test_a_numeric_eta_is_kept(broker):
    message = decode(encoded(broker, options={"eta": 1_700_000_000_000}), queue_name="q", broker=broker)
    assert message.options["eta"] == 1_700_000_000_000


def test_a_null_max_retries_falls_back_to_the_actors_and_is_accepted(broker):
    assert decode(encoded(broker, options={"max_retries": None}), queue_name="q", broker=broker)


def test_a_message_of_another_queue_is_refused(broker):
    with pytest.raises(BadMessage, match="^a message of queue 'q.DQ' on a topic of queue 'q'$"):
        decode(encoded(broker, queue_name="q.DQ"), queue_name="q", broker=broker)


@pytest.mark.parametrize("args, kwargs", [([], {}), ([1, 2, 3], {}), ([1], {"nope": 2})])
def test_arguments_the_actor_cannot_take_are_refused(broker, args, kwargs):
    with pytest.raises(BadMessage, match="^arguments that actor pay cannot take: "):
        decode(encoded(broker, args=args, kwargs=kwargs), queue_name="q", broker=broker)


def test_an_undeclared_actor_is_left_to_dramatiqs_worker(broker):
    # Its ActorNotFound dead letter can be replayed once the actor is declared.
    assert decode(encoded(broker, actor_name="later"), queue_name="q", broker=broker).actor_name == "later"
