"""The shared schemas: each rule accepted and rejected."""

from __future__ import annotations

from decimal import Decimal

import pytest
from marshmallow import ValidationError

from tasks.schemas import PaymentSchema, SignUpSchema


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"name": "Ada", "email": "ada@example.com"}, {"name": "Ada", "email": "ada@example.com"}),
        ({"name": "  Ada  ", "email": " Ada@Example.COM "}, {"name": "Ada", "email": "ada@example.com"}),
        ({"name": "x" * 200, "email": "a@b.io"}, {"name": "x" * 200, "email": "a@b.io"}),
    ],
)
def test_sign_up_accepts(payload, expected):
    assert SignUpSchema().load(payload) == expected


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"email": "ada@example.com"}, "name"),
        ({"name": "", "email": "ada@example.com"}, "name"),
        ({"name": "   ", "email": "ada@example.com"}, "name"),
        ({"name": "x" * 201, "email": "ada@example.com"}, "name"),
        ({"name": 42, "email": "ada@example.com"}, "name"),
        ({"name": "Ada"}, "email"),
        ({"name": "Ada", "email": "not-an-email"}, "email"),
        ({"name": "Ada", "email": "ada@"}, "email"),
        ({"name": "Ada", "email": "ada@example.com", "admin": True}, "admin"),
        ({"name": "Ada\ud800", "email": "a@example.com"}, "name"),
        ({"name": "Ada\x00", "email": "a@example.com"}, "name"),
        ({"name": "Ada", "email": "\u0130" * 130 + "@example.com"}, "email"),
    ],
)
def test_sign_up_rejects(payload, field):
    with pytest.raises(ValidationError) as error:
        SignUpSchema().load(payload)
    assert field in error.value.messages


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"userId": 1, "amount": "10.50"}, {"userId": 1, "amount": Decimal("10.50"), "currency": "USD"}),
        ({"userId": 7, "amount": 10.1, "currency": "EUR"}, {"userId": 7, "amount": Decimal("10.1"), "currency": "EUR"}),
        ({"userId": 7, "amount": 1_000_000}, {"userId": 7, "amount": Decimal("1000000"), "currency": "USD"}),
        (
            {"userId": 7, "amount": "0.01", "currency": "JPY"},
            {"userId": 7, "amount": Decimal("0.01"), "currency": "JPY"},
        ),
    ],
)
def test_payment_accepts(payload, expected):
    assert PaymentSchema().load(payload) == expected


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"amount": "1"}, "userId"),
        ({"userId": 0, "amount": "1"}, "userId"),
        ({"userId": -3, "amount": "1"}, "userId"),
        ({"userId": "5", "amount": "1"}, "userId"),
        ({"userId": 1.5, "amount": "1"}, "userId"),
        ({"userId": 1}, "amount"),
        ({"userId": 1, "amount": "0"}, "amount"),
        ({"userId": 1, "amount": "-1"}, "amount"),
        ({"userId": 1, "amount": "1.234"}, "amount"),
        ({"userId": 1, "amount": 0.001}, "amount"),
        ({"userId": 1, "amount": "1000000.01"}, "amount"),
        ({"userId": 1, "amount": "abc"}, "amount"),
        ({"userId": 1, "amount": "NaN"}, "amount"),
        ({"userId": 1, "amount": "1", "currency": "XXX"}, "currency"),
        ({"userId": 1, "amount": "1", "currency": "usd"}, "currency"),
    ],
)
def test_payment_rejects(payload, field):
    with pytest.raises(ValidationError) as error:
        PaymentSchema().load(payload)
    assert field in error.value.messages


@pytest.mark.parametrize(
    "amount, cents", [("10.5", "10.50"), ("10.50", "10.50"), (10.5, "10.50"), ("1E+1", "10.00"), (7, "7.00")]
)
def test_payment_amounts_are_loaded_in_cents(amount, cents):
    assert str(PaymentSchema().load({"userId": 1, "amount": amount})["amount"]) == cents


def test_payment_dumps_money_as_a_string():
    assert PaymentSchema().dump({"userId": 1, "amount": Decimal("10.10"), "currency": "USD"})["amount"] == "10.10"
