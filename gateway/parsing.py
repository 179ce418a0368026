"""Request parsing: flask-smorest's, with every unreadable JSON body answered 400.

webargs turns a ``JSONDecodeError`` into 400 "Invalid JSON body.", but Python's ``json`` raises
other errors for bodies it cannot read either: ``ValueError`` for an integer of more than 4,300
digits, ``RecursionError`` for arrays nested some thousands deep.  Both fit in the 64 KiB a body
may have, and would be a 500.
"""

from __future__ import annotations

import json

import flask_smorest
from marshmallow import Schema
from webargs.flaskparser import FlaskParser
from werkzeug.routing import IntegerConverter

from tasks.schemas import KEY_CHARACTERS, idempotency_key_field


class Parser(FlaskParser):
    """webargs' Flask parser, for which any body ``json`` cannot read is invalid JSON."""

    def _raw_load_json(self, req):
        try:
            return super()._raw_load_json(req)
        except json.JSONDecodeError:
            raise
        except (ValueError, RecursionError) as e:
            # With the body as the document: webargs reads an empty one as "no body".
            raise json.JSONDecodeError(f"{type(e).__name__}: {e}", req.get_data(as_text=True), 0) from None


class AsciiInteger(IntegerConverter):
    """Werkzeug's ``int`` converter, for the digits 0 to 9 only: its ``\\d`` also matches other
    scripts' digits, so ``/api/users/\u0661`` was user 1."""

    regex = r"[0-9]+"


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint, parsing arguments with :class:`Parser`."""

    ARGUMENTS_PARSER = Parser()


class IdempotencyKeySchema(Schema):
    """The optional ``Idempotency-Key`` header: a repeated key answers with the same task."""

    idempotency_key = idempotency_key_field(
        data_key="Idempotency-Key",
        load_default=None,
        metadata={
            "description": "Makes retries of this request answer with the same task, and never run it twice: "
            "also after a 503 whose outcome is unknown. One key, 1 to 255 printable ASCII characters but the comma.",
            "pattern": KEY_CHARACTERS,
        },
    )
