"""How gunicorn serves the gateway: a worker class whose own errors are the gateway's JSON errors.

gunicorn answers some requests itself, before the app sees them: a control byte in a header, a
request line or path over its limit, a malformed chunk.  It writes those answers as HTML pages
(``gunicorn.util.write_error``).  :class:`JSONErrorsWorker` is gunicorn's thread worker with that
writer replaced, in the worker process, by one that answers with the gateway's error shape,
``{"code", "status", "message"}`` (see :mod:`gateway.errors`).  The Procfile's ``web`` uses it.
It also logs the address it listens on, which gunicorn's master leaves blank with ``--reuse-port``.
"""

from __future__ import annotations

import json

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker
from werkzeug.http import HTTP_STATUS_CODES


def json_error(status: int, reason: str, message: str) -> bytes:
    """Returns a whole HTTP response that carries the gateway's JSON error."""
    body = json.dumps(
        {
            "code": status,
            "status": HTTP_STATUS_CODES.get(status, reason),
            "message": message or HTTP_STATUS_CODES.get(status, reason),
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1")
    return head + body


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """``gunicorn.util.write_error``, writing JSON instead of an HTML page."""
    util.write_nonblock(sock, json_error(status_int, reason, mesg))


class JSONErrorsWorker(ThreadWorker):
    """gunicorn's ``gthread`` worker, whose own error answers are JSON."""

    def init_process(self) -> None:
        # In the worker process only, before it serves: gunicorn's handle_error looks it up at each error.
        util.write_error = write_json_error
        # With --reuse-port each worker binds its own socket, and gunicorn's master logs an empty
        # "Listening at:": say where this one listens.
        self.log.info("Listening at: %s (worker %s)", ",".join(str(s) for s in self.sockets), self.pid)
        super().init_process()
