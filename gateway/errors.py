"""Every error the gateway answers, in one place, as JSON.

The body is always ``{"code", "status", "message", "errors"?}``: flask-smorest's shape, so a 422
keeps naming each invalid field (``errors: {"json": {field: [messages]}}``).  Kafka being
unavailable is a 503 with ``Retry-After``: the task was not accepted, and the client may try
again.  Anything unexpected is logged and answered as a 500 that reveals nothing.
"""

from __future__ import annotations

import http
import logging

from confluent_kafka import KafkaException
from dramatiq.results import ResultTimeout
from flask import Flask, request, url_for
from flask_smorest.error_handler import ErrorSchema
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, UnsupportedMediaType
from werkzeug.http import HTTP_STATUS_CODES

from broker import DeliveryFailed
from broker.clientlog import ConditionLog
from broker.flask import KAFKA_LOG
from broker.submit import KeyReused, OutcomeUnknown, SubmissionInProgress

logger = logging.getLogger(__name__)

#: Seconds a client should wait before retrying when Kafka or the database is unavailable.
RETRY_AFTER_SECONDS = 5

#: The OpenAPI description of the ``Retry-After`` header.
RETRY_AFTER_HEADER = {
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}},
}

#: What webargs' validation errors mean, as the message next to its ``errors``.
INVALID_REQUEST_MESSAGES = {
    400: "The request body is not valid JSON.",
    422: "The request is invalid: see errors.",
}

#: Methods whose body must be JSON.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def error_response(code: int, message: str, *, errors: dict | None = None, headers: dict | None = None):
    """Returns the JSON error answer, as a Flask view return value."""
    body = {"code": code, "status": HTTP_STATUS_CODES.get(code, "Unknown Error"), "message": message}
    if errors:
        body["errors"] = errors
    return body, code, headers or {}


def unavailable(message: str):
    """Returns a 503 that tells the client when to try again."""
    return error_response(503, message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def _http_exception(error: HTTPException):
    # flask-smorest's and webargs' abort() put message, errors and headers in ``data``.
    data = getattr(error, "data", None) or {}
    errors = data.get("errors", data.get("messages"))
    message = data.get("message") or (INVALID_REQUEST_MESSAGES.get(error.code) if errors else None) or error.description
    # Werkzeug's own headers matter: 405 answers carry ``Allow``.
    headers = {name: value for name, value in error.get_headers() if name.lower() != "content-type"}
    headers.update(data.get("headers") or {})
    return error_response(error.code or 500, message, errors=errors, headers=headers)


#: Kafka being unavailable is one condition, logged when it starts and once a minute while it lasts,
#: not once per request answered 503 (the extension's log, which its sends use too).
_KAFKA_LOG = KAFKA_LOG


def _kafka_unavailable(error: Exception):
    _KAFKA_LOG.report(logging.WARNING, "unavailable", f"unavailable, answering 503: {error}")
    if isinstance(error, DeliveryFailed) and error.maybe_stored:
        # Outside a submission (a user lookup's request), whose 503 names the task it may have sent.
        return unavailable("Kafka did not answer in time. Try again later.")
    return unavailable("Kafka is unavailable; nothing was sent. Try again later.")


def _outcome_unknown(error: OutcomeUnknown):
    """A 503 that says Kafka may have the task: its id, its status URL, and how to send it again
    without running it twice."""
    _KAFKA_LOG.report(logging.WARNING, "unconfirmed", f"did not confirm a send in time, answering 503: {error}")
    again = (
        "Send the same request again with the same Idempotency-Key: it sends this task again, which cannot run twice."
        if error.keyed
        else "Look at its status before sending it again: sent again without an Idempotency-Key, it is a new task."
    )
    url = url_for("tasks.get_task", task_id=error.task_id)
    body, code, headers = unavailable(f"Kafka did not confirm the task in time; it may have stored it. {again}")
    return {**body, "taskId": error.task_id, "statusUrl": url}, code, {**headers, "Location": url}


#: The database being unavailable, logged when it starts and once a minute while it lasts.
_DATABASE_LOG = ConditionLog("The database, as the web process sees it", logger=logger)


def _database_unavailable(error: OperationalError):
    _DATABASE_LOG.report(logging.WARNING, "unavailable", f"unavailable, answering 503: {error.orig or error}")
    return unavailable("The database is unavailable; try again later.")


def _submission_in_progress(error: SubmissionInProgress):
    return error_response(409, "A request with this Idempotency-Key is still being submitted; try again shortly.")


def _key_reused(error: KeyReused):
    return error_response(
        422,
        INVALID_REQUEST_MESSAGES[422],
        errors={
            "headers": {"Idempotency-Key": ["Already used for a different request; use a new key for a new request."]}
        },
    )


def _result_timeout(error: ResultTimeout):
    return error_response(504, "The service did not answer in time.")


def _unexpected(error: Exception):
    logger.exception("Unhandled error on %s %s", request.method, request.path)
    return error_response(500, "An unexpected error occurred.")


def _require_json() -> None:
    """Refuses an API request whose body is not JSON, before webargs would read it as missing (a
    misleading 422).  The ops pages post HTML forms."""
    if (
        request.routing_exception is None
        and request.path.startswith("/api/")
        and request.method in BODY_METHODS
        and not request.is_json
    ):
        raise UnsupportedMediaType("The request body must be JSON (Content-Type: application/json).")


def register(app: Flask) -> None:
    """Makes the app answer every error as JSON."""
    app.before_request(_require_json)
    app.register_error_handler(HTTPException, _http_exception)
    app.register_error_handler(OutcomeUnknown, _outcome_unknown)
    app.register_error_handler(DeliveryFailed, _kafka_unavailable)
    app.register_error_handler(KafkaException, _kafka_unavailable)
    app.register_error_handler(OperationalError, _database_unavailable)
    app.register_error_handler(SubmissionInProgress, _submission_in_progress)
    app.register_error_handler(KeyReused, _key_reused)
    app.register_error_handler(ResultTimeout, _result_timeout)
    app.register_error_handler(Exception, _unexpected)


def documented(blp, *codes: int):
    """Documents the error answers of an endpoint, with ``Retry-After`` on 503.

    Parameters:
      blp(Blueprint): The endpoint's blueprint.
      codes(int): The error status codes the endpoint may answer.
    """

    def decorator(view):
        for code in codes:
            if code == 503:
                view = blp.alt_response(
                    503, schema=ErrorSchema, headers=RETRY_AFTER_HEADER, description=HTTP_STATUS_CODES[503]
                )(view)
            else:  # flask-smorest's response component for the status
                view = blp.alt_response(code, response=http.HTTPStatus(code).name)(view)
        return view

    return decorator
