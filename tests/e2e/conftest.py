"""A real Chromium driven by Playwright (Debian's /usr/bin/chromium; no downloaded browsers)."""
from __future__ import annotations

import os

import pytest

from tests.fixtures.services import require_service

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


@pytest.fixture(autouse=True)
def _orm_beside_playwright(monkeypatch):
    # Playwright's sync API keeps an event loop running in this thread, so Django would refuse
    # this test's own ORM calls (fixtures, assertions). The server under test is another process
    # and keeps its checks; only this test process is told the loop is not ours.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


# Module scope: the running loop must be gone before tests outside tests/e2e start.
@pytest.fixture(scope="module")
def browser():
    path = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
    require_service(os.path.exists(path), f"Chromium ({path})")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()
