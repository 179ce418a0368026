"""Marshmallow schemas shared by the gateway and the actors.

One definition validates both the HTTP body and the task payload, so a task that reaches an actor
was checked by the same rules the gateway applied, and a record produced straight to Kafka is
checked again.  JSON field names follow the NestJS system this grew from (``userId``).
"""

from __future__ import annotations

import re
from decimal import Decimal

from dramatiq.middleware import CurrentMessage
from marshmallow import Schema, ValidationError, fields, post_load, pre_load, validate

from broker.lifecycle import PUBLIC

from .errors import InvalidPayload

#: The largest payment accepted, in the payment's currency.
MAX_AMOUNT = Decimal("1000000")

#: The places every amount is written with.
CENT = Decimal("0.01")

#: ISO 4217 codes accepted for payments.  A closed list: a typo must fail, not charge in "USD ".
CURRENCIES = frozenset(
    [
        "AED",
        "AFN",
        "ALL",
        "AMD",
        "ANG",
        "AOA",
        "ARS",
        "AUD",
        "AWG",
        "AZN",
        "BAM",
        "BBD",
        "BDT",
        "BGN",
        "BHD",
        "BIF",
        "BMD",
        "BND",
        "BOB",
        "BRL",
        "BSD",
        "BTN",
        "BWP",
        "BYN",
        "BZD",
        "CAD",
        "CDF",
        "CHF",
        "CLP",
        "CNY",
        "COP",
        "CRC",
        "CUP",
        "CVE",
        "CZK",
        "DJF",
        "DKK",
        "DOP",
        "DZD",
        "EGP",
        "ERN",
        "ETB",
        "EUR",
        "FJD",
        "FKP",
        "GBP",
        "GEL",
        "GHS",
        "GIP",
        "GMD",
        "GNF",
        "GTQ",
        "GYD",
        "HKD",
        "HNL",
        "HTG",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "IQD",
        "IRR",
        "ISK",
        "JMD",
        "JOD",
        "JPY",
        "KES",
        "KGS",
        "KHR",
        "KMF",
        "KPW",
        "KRW",
        "KWD",
        "KYD",
        "KZT",
        "LAK",
        "LBP",
        "LKR",
        "LRD",
        "LSL",
        "LYD",
        "MAD",
        "MDL",
        "MGA",
        "MKD",
        "MMK",
        "MNT",
        "MOP",
        "MRU",
        "MUR",
        "MVR",
        "MWK",
        "MXN",
        "MYR",
        "MZN",
        "NAD",
        "NGN",
        "NIO",
        "NOK",
        "NPR",
        "NZD",
        "OMR",
        "PAB",
        "PEN",
        "PGK",
        "PHP",
        "PKR",
        "PLN",
        "PYG",
        "QAR",
        "RON",
        "RSD",
        "RUB",
        "RWF",
        "SAR",
        "SBD",
        "SCR",
        "SDG",
        "SEK",
        "SGD",
        "SHP",
        "SLE",
        "SOS",
        "SRD",
        "SSP",
        "STN",
        "SYP",
        "SZL",
        "THB",
        "TJS",
        "TMT",
        "TND",
        "TOP",
        "TRY",
        "TTD",
        "TWD",
        "TZS",
        "UAH",
        "UGX",
        "USD",
        "UYU",
        "UZS",
        "VES",
        "VND",
        "VUV",
        "WST",
        "XAF",
        "XCD",
        "XOF",
        "XPF",
        "YER",
        "ZAR",
        "ZMW",
        "ZWL",
    ]
)


def load(schema: Schema, payload, what: str) -> dict:
    """Validates a task payload with a schema.

    Raises:
      InvalidPayload: Naming ``what`` and every invalid field; a bad payload is never retried.
    """
    try:
        return schema.load(payload)
    except ValidationError as e:
        raise InvalidPayload(f"invalid {what}: {e.messages}") from None


#: The longest task id the store keeps (``tasks.id``); Dramatiq's are 36-character UUIDs.
MAX_TASK_ID_LENGTH = 64


def current_task_id() -> str:
    """Returns the id of the message being processed: the task's id.

    Raises:
      InvalidPayload: If it is longer than the store keeps (a record produced straight to Kafka).
    """
    task_id = CurrentMessage.get_current_message().message_id
    if len(task_id) > MAX_TASK_ID_LENGTH:
        raise InvalidPayload(f"invalid task id: longer than {MAX_TASK_ID_LENGTH} characters")
    return task_id


def _in_range(value: Decimal) -> None:
    if not 0 < value <= MAX_AMOUNT:
        raise ValidationError(f"Must be greater than 0 and at most {MAX_AMOUNT}.")


#: How an amount is written: ASCII digits, with a point and decimals or not, and an exponent or
#: not (a JSON number is written so too).  Python's Decimal would also take spaces around it,
#: other scripts' digits, underscores, "Infinity" and a sign.
AMOUNT_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def _at_most_two_decimals(value: Decimal) -> None:
    if value.as_tuple().exponent < -2:
        raise ValidationError("Must have at most 2 decimal places.")


def _storable(value: str) -> None:
    """Refuses what no database column takes: NUL (PostgreSQL) and lone surrogates (not UTF-8)."""
    if "\x00" in value:
        raise ValidationError("Must not contain NUL characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("Must be valid Unicode text (no lone surrogates).") from None


class SignUpSchema(Schema):
    """A sign-up: ``{name, email}``.  The email is stored lower-cased and trimmed."""

    name = fields.String(required=True, validate=[validate.Length(min=1, max=200), _storable])
    email = fields.Email(required=True, validate=[validate.Length(max=254), _storable])

    @pre_load
    def _normalise(self, data, **kwargs):
        # Before validation, so that the limits hold for what is stored: lower-casing can lengthen
        # a string ("İ" becomes two characters).
        if isinstance(data, dict):
            data = dict(data)
            for key in ("name", "email"):
                if isinstance(data.get(key), str):
                    data[key] = data[key].strip()
            if isinstance(data.get("email"), str):
                data["email"] = data["email"].lower()
        return data


#: The largest user id: ``users.id`` is a 32-bit INTEGER in PostgreSQL.  Larger ids exist nowhere,
#: and PostgreSQL refuses to even compare them with one.
MAX_USER_ID = 2**31 - 1


class PaymentSchema(Schema):
    """A payment: ``{userId, amount, currency}``.  Money is a ``Decimal``, never a float."""

    userId = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=MAX_USER_ID))
    amount = fields.Decimal(
        required=True,
        as_string=True,
        allow_nan=False,
        validate=[_in_range, _at_most_two_decimals],
        # Documented by hand: it is a string (exact, never a float), of a pattern, within limits.
        metadata={
            "type": "string",
            "format": "decimal",
            "pattern": f"^{AMOUNT_PATTERN.pattern}$",
            "example": "42.00",
            "description": f"A decimal number, as a string: more than 0, at most {MAX_AMOUNT}, with at most "
            "2 decimal places. A JSON number is accepted too.",
        },
    )
    currency = fields.String(load_default="USD", validate=validate.OneOf(sorted(CURRENCIES)))

    @pre_load
    def _exact_amounts(self, data, **kwargs):
        # A JSON number like 10.1 arrives as a float, already rounded in binary; as a string it is exact.
        if isinstance(data, dict) and isinstance(data.get("amount"), float):
            data = dict(data, amount=repr(data["amount"]))
        if (
            isinstance(data, dict)
            and isinstance(data.get("amount"), str)
            and not AMOUNT_PATTERN.fullmatch(data["amount"])
        ):
            raise ValidationError("Must be a decimal number of digits 0 to 9, like 10.50.", field_name="amount")
        return data

    @post_load
    def _in_cents(self, data, **kwargs):
        # Exact, as the amount has at most two places: "10.5" and "10.50" become one amount, so a
        # retry that writes it otherwise is the same request under its idempotency key.
        return dict(data, amount=data["amount"].quantize(CENT))


#: The longest idempotency key: the store's column.
MAX_IDEMPOTENCY_KEY_LENGTH = 255

#: An idempotency key's characters: printable ASCII, as HTTP header values carry them unchanged.
PRINTABLE_ASCII = r"^[\x20-\x7e]+$"

#: An idempotency key's characters: printable ASCII but the comma, which joins two headers of one
#: name into one value (so two ``Idempotency-Key`` headers would read as a new key made of both).
KEY_CHARACTERS = r"^[\x20-\x2b\x2d-\x7e]+$"


def _printable_ascii(value: str) -> None:
    if not (value.isascii() and value.isprintable()):
        raise ValidationError("Must be printable ASCII characters.")


def _one_key(value: str) -> None:
    if "," in value:
        raise ValidationError("Must be one key, without commas: give one Idempotency-Key header.")


def idempotency_key_field(**kwargs) -> fields.String:
    """An idempotency key field: 1 to 255 printable ASCII characters, no comma."""
    validators = [validate.Length(min=1, max=MAX_IDEMPOTENCY_KEY_LENGTH), _printable_ascii, _one_key]
    return fields.String(validate=validators, **kwargs)


class PaymentKeySchema(Schema):
    """``process_payment``'s second argument, checked like the ``Idempotency-Key`` header it comes from."""

    idempotency_key = idempotency_key_field(allow_none=True)


class TaskAcceptedSchema(Schema):
    """The answer to an accepted task."""

    taskId = fields.String(required=True)
    statusUrl = fields.String(required=True)


class TaskStatusSchema(Schema):
    """What ``GET /api/tasks/<taskId>`` answers."""

    taskId = fields.String(required=True)
    kind = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(PUBLIC))
    result = fields.Raw(allow_none=True)
    error = fields.String(allow_none=True)
    createdAt = fields.DateTime(required=True)
    updatedAt = fields.DateTime(required=True)


class UserSchema(Schema):
    """A stored user."""

    id = fields.Integer(required=True)
    name = fields.String(required=True)
    email = fields.String(required=True)
