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


def test_a_finished_task_logs_no_warning_that_its_result_was_discarded(system):
    status, body, _ = call("POST", f"{system.base}/api/auth/sign-up", {"name": "Ada", "email": "ada@example.com"})
    assert status == 202, body
    system.wait_for(body["taskId"], "succeeded")
    # The worker keeps the result in the database: Dramatiq's warning would be wrong, and came per task
    assert "Worker process is ready" in system.log("auth")
    assert "has been discarded" not in system.log("auth")


def test_a_lookup_that_times_out_is_retried_with_one_line_and_no_traceback(kafka, tmp_path):
    # Given the system with a short lookup timeout and no auth worker to answer
    from tests.services import Services

    with Services(
        kafka, tmp_path, GET_USER_TIMEOUT_MS="300", PAYMENTS_MIN_BACKOFF_MS="100", PAYMENTS_MAX_BACKOFF_MS="200"
    ) as services:
        services.sign_up("Ada", "ada@example.com")
        services.signal("auth", 15)
        services.wait_gone("auth", timeout=30)
        # When a payment waits for the user in vain, then it is retrying
        status, body, _ = call("POST", f"{services.base}/api/payments/pay", {"userId": 1, "amount": "1.00"})
        assert status == 202, body
        task = services.wait_for(body["taskId"], "retrying")
        assert "UserLookupTimedOut" in task["error"]
        # And once the auth worker is back, it succeeds
        services.launch("auth")
        services.wait_for(body["taskId"], "succeeded")
        log = services.log_text("payments")
    # And the retries were logged in one line each, with no traceback
    assert "Retrying message" in log
    assert "Traceback" not in log and "UserLookupTimedOut" not in log.replace("Retrying", "")
