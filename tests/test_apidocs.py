"""``/api/docs`` in a real headless browser with no network: Swagger UI comes from the app itself."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as shown
from selenium.webdriver.support.ui import WebDriverWait

from gateway import create_app


@pytest.fixture
def client_app(stub_system, stub_config):
    return create_app(stub_config, broker=stub_system.broker, store=stub_system.store).test_client()


def test_the_api_docs_render_every_operation_offline(browser, served, stub_system, stub_config):
    base = served(create_app(stub_config, broker=stub_system.broker, store=stub_system.store))
    browser.get(f"{base}/api/docs")
    WebDriverWait(browser, 30).until(shown.presence_of_element_located((By.CSS_SELECTOR, ".opblock-summary")))
    paths = {element.text for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert paths >= {"/api/auth/sign-up", "/api/payments/pay", "/api/tasks/{task_id}", "/api/users/{user_id}"}
    summaries = [element.text for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-description")]
    assert "Signs a user up." in summaries and not any("`" in summary for summary in summaries), summaries


def test_the_api_docs_load_nothing_from_elsewhere(client_app):
    page = client_app.get("/api/docs").get_data(as_text=True)
    assert "https://" not in page and "/api/docs/assets/swagger-ui-bundle.js" in page


def test_every_request_body_has_an_example_and_amounts_are_decimal_strings(client_app):
    spec = client_app.get("/api/openapi.json").get_json()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "requestBody" in operation:
                assert "example" in operation["requestBody"]["content"]["application/json"], (method, path)
    amount = spec["components"]["schemas"]["Payment"]["properties"]["amount"]
    assert (amount["type"], amount["format"], amount["example"]) == ("string", "decimal", "42.00")
