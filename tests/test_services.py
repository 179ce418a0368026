"""The whole system end to end: the Procfile's processes, real Kafka, HTTP in and out."""

from __future__ import annotations

import pytest

from tasks.store import Store
from tests.system import System, call


@pytest.fixture
def system(kafka, tmp_path):
    with System(kafka, tmp_path) as system:
        yield system


def test_sign_up_lookup_and_pay_end_to_end(system):
    # Sign up over HTTP, and see the task succeed
    status, body, headers = call("POST", f"{system.base}/api/auth/sign-up", {"name": "Ada", "email": "ada@example.com"})
    assert status == 202, body
    assert headers["Location"].endswith(body["statusUrl"])
    user = system.wait_for(body["taskId"], "succeeded", "failed", "dead")["result"]
    assert user["name"] == "Ada"
    # Look the user up through get_user's request/response
    status, found, _ = call("GET", f"{system.base}/api/users/{user['id']}")
    assert (status, found) == (200, {"id": user["id"], "name": "Ada", "email": "ada@example.com"})
    # Pay, and see the payment recorded with the user's name
    status, body, _ = call(
        "POST",
        f"{system.base}/api/payments/pay",
        {"userId": user["id"], "amount": "42.00"},
        headers={"Idempotency-Key": "order-1"},
    )
    assert status == 202, body
    task = system.wait_for(body["taskId"], "succeeded", "failed", "dead")
    assert task["status"] == "succeeded", task
    assert task["result"]["userName"] == "Ada"
    assert "process payment for user Ada - amount: 42.00" in system.log("payments")
    assert [(p["userId"], p["amount"]) for p in Store(system.database_url).payments()] == [(user["id"], "42.00")]
    # The same Idempotency-Key returns the same task and charges nothing more
    status, again, _ = call(
        "POST",
        f"{system.base}/api/payments/pay",
        {"userId": user["id"], "amount": "42.00"},
        headers={"Idempotency-Key": "order-1"},
    )
    assert (status, again["taskId"]) == (202, body["taskId"])
    assert len(Store(system.database_url).payments()) == 1


def test_paying_for_an_unknown_user_fails_with_the_reason(system):
    status, body, _ = call("POST", f"{system.base}/api/payments/pay", {"userId": 424242, "amount": "1.00"})
    assert status == 202, body
    task = system.wait_for(body["taskId"], "succeeded", "failed", "dead")
    assert (task["status"], task["error"]) == ("failed", "unknown user 424242")


def test_an_unknown_user_lookup_is_404(system):
    status, body, _ = call("GET", f"{system.base}/api/users/999999")
    assert status == 404
    assert body["code"] == 404
