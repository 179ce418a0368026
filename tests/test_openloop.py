"""The open-loop load generator, against a small real HTTP server (no Kafka)."""

import http.server
import json
import threading
import typing

import pytest

from benchmarks import openloop


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    bodies: typing.ClassVar[list] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Handler.bodies.append((self.path, json.loads(body)))
        answer = b'{"ok": true}'
        self.send_response(202 if self.path == "/ok" else 422)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Handler.bodies = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_requests_come_due_evenly_at_the_rate():
    assert openloop.due_times(4, 1) == [0, 0.25, 0.5, 0.75]
    assert len(openloop.due_times(100, 1.5)) == 150


def test_every_due_request_is_sent_and_its_answer_counted(server):
    load = openloop.run(server, 200, 0.5, lambda i: ("/ok" if i % 4 else "/bad", json.dumps({"i": i}).encode()))

    assert load.due == 100
    assert load.statuses == {202: 75, 422: 25}
    assert sorted(body["i"] for _, body in Handler.bodies) == list(range(100))
    assert len(load.latencies) == 100 and min(load.latencies) >= 0
    assert load.ended >= load.started


def test_a_server_that_is_not_there_is_counted_as_failed_connections():
    from broker.devkafka import free_port

    load = openloop.run(free_port(), 50, 0.2, lambda i: ("/ok", b"{}"))

    assert load.due == 10
    assert load.statuses == {0: 10}
    assert load.latencies == []
