"""/ops in headless Chromium, against the Procfile's processes on a real Kafka: lag seen and gone, a
dead letter replayed from the page and processed once, a queue paused and resumed from the page."""

from __future__ import annotations

import base64
import signal

import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By

from tests.eventually import eventually
from tests.services import Services
from tests.system import call

pytestmark = pytest.mark.reliability

PASSWORD = "ops password for the browser"


@pytest.fixture
def system(kafka, tmp_path):
    with Services(kafka, tmp_path, OPS_PASSWORD=PASSWORD) as services:
        yield services


@pytest.fixture
def page(browser, system):
    """The browser, sending the ops password with every request (as after the login prompt)."""
    token = base64.b64encode(f"ops:{PASSWORD}".encode()).decode()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    yield browser
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})


def shown(page, by, selector: str, text: str) -> bool:
    """Whether the page (once it has loaded after a click) shows ``text`` in the element."""
    try:
        return text in page.find_element(by, selector).text
    except (NoSuchElementException, StaleElementReferenceException):
        return False  # the next page is still loading


def waiting(page, base: str, queue: str) -> int:
    page.get(f"{base}/ops")
    cell = page.find_element(By.CSS_SELECTOR, f'td[data-queue="{queue}"]')
    return int(cell.get_attribute("data-waiting"))


def sign_up(system, n: int) -> str:
    status, body, _ = call("POST", f"{system.base}/api/auth/sign-up", {"name": f"U{n}", "email": f"u{n}@example.com"})
    assert status == 202, body
    return body["taskId"]


def pay(system, user_id: int, key: str) -> str:
    payment = {"userId": user_id, "amount": "5.00", "currency": "EUR"}
    status, body, _ = call("POST", f"{system.base}/api/payments/pay", payment, {"Idempotency-Key": key})
    assert status == 202, body
    return body["taskId"]


def payments_with(system, key: str) -> int:
    return sum(1 for payment in system.store.payments() if payment["idempotencyKey"] == key)


def test_the_dashboard_shows_lag_replays_a_dead_letter_and_pauses_a_queue(system, page, screenshots):
    base = system.base
    # Given no auth worker, sign-ups wait: the page shows them
    system.signal("auth", signal.SIGTERM)
    system.wait_gone("auth", timeout=30)
    for n in range(5):
        sign_up(system, n)
    eventually(lambda: waiting(page, base, "auth") == 5, timeout=30, what="5 sign-ups waiting on the page")
    page.save_screenshot(str(screenshots / "ops-queues.png"))
    # When the auth worker starts, the page shows the lag back to zero
    system.launch("auth")
    eventually(lambda: waiting(page, base, "auth") == 0, timeout=60, what="the sign-ups processed, on the page")

    # Given a payment for a user who does not exist yet: it fails for good, and is dead-lettered
    task = pay(system, 6, "order-dead")
    system.wait_for(task, "failed")
    page.get(f"{base}/ops/queues/payments/dead-letters")
    rows = eventually(lambda: page.find_elements(By.CSS_SELECTOR, "tbody tr"), timeout=30, what="a dead letter listed")
    assert "unknown user 6" in rows[0].text
    page.save_screenshot(str(screenshots / "ops-dead-letters.png"))
    # When the user signs up, and the dead letter is replayed from the page
    system.wait_for(sign_up(system, 6), "succeeded")
    rows[0].find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
    page.find_element(By.XPATH, "//button[text()='Replay selected']").click()
    # Then the page says so, and the payment is recorded once
    eventually(lambda: shown(page, By.CLASS_NAME, "notice", "1 replayed, 0 skipped"), what="the replay's notice")
    system.wait_for(task, "succeeded")
    assert payments_with(system, "order-dead") == 1

    # When the payments queue is paused from its page, and the workers say they obey
    page.get(f"{base}/ops/queues/payments")
    page.find_element(By.XPATH, "//button[starts-with(text(), 'Pause')]").click()
    eventually(lambda: shown(page, By.TAG_NAME, "h1", "paused"), what="the queue's page saying it is paused")

    def obeying() -> bool:
        page.get(f"{base}/ops/workers")
        return "payments paused" in page.find_element(By.TAG_NAME, "main").text

    eventually(obeying, timeout=30, what="the payments worker to report the queue paused")
    tasks = [pay(system, 1, f"order-paused-{n}") for n in range(3)]
    eventually(lambda: waiting(page, base, "payments") == 3, timeout=30, what="3 payments waiting")
    page.get(f"{base}/ops/queues/payments")
    page.save_screenshot(str(screenshots / "ops-queue-paused.png"))
    # Then none ran
    assert sum(payments_with(system, f"order-paused-{n}") for n in range(3)) == 0
    # When it is resumed from the page, then they all run, once each
    page.find_element(By.XPATH, "//button[starts-with(text(), 'Resume')]").click()
    for task in tasks:
        system.wait_for(task, "succeeded")
    assert [payments_with(system, f"order-paused-{n}") for n in range(3)] == [1, 1, 1]
    eventually(lambda: not obeying(), timeout=30, what="the workers to report the queue resumed")
    page.save_screenshot(str(screenshots / "ops-workers.png"))
    # And on a phone's screen, the overview's tables fit its width (they scroll inside their box)
    page.set_window_size(390, 844)
    try:
        page.get(f"{base}/ops")
        page.save_screenshot(str(screenshots / "ops-phone.png"))
        assert page.execute_script("return document.documentElement.scrollWidth") <= 390
    finally:
        page.set_window_size(1280, 900)
