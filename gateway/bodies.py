"""Request bodies over the limit, also when they come in chunks.

Flask refuses a body whose ``Content-Length`` is over ``MAX_CONTENT_LENGTH`` with a 413.  A body sent
in chunks has no ``Content-Length``: Werkzeug then reads at most the limit and stops, so a larger
body was parsed cut (a 400 "not valid JSON", or a task made of its first 64 KiB).
:class:`BoundedBody` reads such a body itself, up to one byte more than the limit: over it, the
request is answered 413 as the app answers it; under it, the app gets the body with its length.
"""

from __future__ import annotations

import io
import json

from werkzeug.http import HTTP_STATUS_CODES


class BoundedBody:
    """WSGI middleware: a chunked body over ``max_bytes`` is a 413, like one with a ``Content-Length``.

    Parameters:
      app: The WSGI application.
      max_bytes(int): The largest body.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, environ, start_response):
        if environ.get("CONTENT_LENGTH") or not environ.get("wsgi.input_terminated"):
            return self.app(environ, start_response)
        body = environ["wsgi.input"].read(self.max_bytes + 1)
        if len(body) > self.max_bytes:
            return self._too_large(start_response)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)

    def _too_large(self, start_response):
        body = json.dumps(
            {
                "code": 413,
                "status": HTTP_STATUS_CODES[413],
                "message": f"The request body is over {self.max_bytes} bytes.",
            }
        ).encode()
        start_response(
            "413 REQUEST ENTITY TOO LARGE", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]
