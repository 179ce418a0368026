"""The gateway over HTTP, as gunicorn serves it from the Procfile: what a client can send that the
app never sees, or sees only through the server (chunked bodies, raw headers, long paths)."""

from __future__ import annotations

import http.client
import json
import signal
import socket

import pytest

from tests.services import Services
from tests.system import call


@pytest.fixture(scope="module")
def gateway(kafka, tmp_path_factory):
    """The Procfile's processes on the session's Kafka, shared by this module's tests."""
    with Services(kafka, tmp_path_factory.mktemp("http"), GET_USER_TIMEOUT_MS="2000") as services:
        yield services


def raw(gateway, request: bytes) -> tuple[int, dict, bytes]:
    """Sends bytes as they are; returns the status, the headers and the body of the answer."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def chunked(gateway, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    """POSTs a body in chunks, with no Content-Length."""
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    try:
        pieces = (body[i : i + 8192] for i in range(0, len(body), 8192))
        connection.request(
            "POST",
            path,
            body=pieces,
            encode_chunked=True,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def assert_json_error(status: int, headers: dict, body: bytes, code: int) -> dict:
    assert status == code, body[:300]
    assert headers["content-type"].startswith("application/json"), (headers, body[:300])
    error = json.loads(body)
    assert error["code"] == code and isinstance(error["status"], str) and error["message"]
    return error


def test_a_chunked_body_over_64_kib_is_413_not_a_task_made_of_its_start(gateway):
    body = json.dumps({"name": "x" * (70 * 1024), "email": "big@example.com"}).encode()
    status, error = chunked(gateway, "/api/auth/sign-up", body)
    assert (status, error["code"]) == (413, 413), error


def test_a_chunked_body_under_the_limit_is_read_whole(gateway):
    body = json.dumps({"name": "Chunky", "email": "chunky@example.com"}).encode()
    status, accepted = chunked(gateway, "/api/auth/sign-up", body)
    assert status == 202, accepted
    assert gateway.wait_for(accepted["taskId"], "succeeded")["result"]["name"] == "Chunky"


def test_a_control_byte_in_a_header_is_a_json_400_from_the_server(gateway):
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Odd: a\x01b\r\n\r\n"
    assert_json_error(*raw(gateway, request), 400)


def test_a_path_over_the_servers_limit_is_a_json_414(gateway):
    request = b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert_json_error(*raw(gateway, request), 414)


def test_two_idempotency_key_headers_are_a_422_naming_the_header(gateway):
    body = json.dumps({"userId": 1, "amount": "1.00"}).encode()
    request = (
        b"POST /api/payments/pay HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Idempotency-Key: order-1\r\nIdempotency-Key: order-2\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    error = assert_json_error(*raw(gateway, request), 422)
    assert list(error["errors"]["headers"]) == ["Idempotency-Key"]


@pytest.mark.parametrize("amount", [" 10.00", "10.00 ", "\u0661\u0660", "\uff11\uff10", "1_0"])
def test_an_amount_with_spaces_or_digits_of_other_scripts_is_a_422_naming_it(gateway, amount):
    status, error, _ = call("POST", f"{gateway.base}/api/payments/pay", {"userId": 1, "amount": amount})
    assert status == 422, error
    assert list(error["errors"]["json"]) == ["amount"]


@pytest.mark.parametrize("user_id", ["0", "%D9%A1", "%EF%BC%91"])  # 0, and 1 in Arabic-Indic and full-width digits
def test_a_user_id_no_user_has_is_404_without_asking_the_auth_service(gateway, user_id):
    # Given no auth worker to answer
    gateway.signal("auth", signal.SIGTERM)
    gateway.wait_gone("auth", timeout=30)
    try:
        # Then a user id no user can have is 404, not a 504 after the lookup's timeout
        status, error, _ = call("GET", f"{gateway.base}/api/users/{user_id}")
        assert (status, error["code"]) == (404, 404), error
    finally:
        gateway.launch("auth")
