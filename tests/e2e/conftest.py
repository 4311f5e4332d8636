"""A real Chromium driven by Playwright (Debian's /usr/bin/chromium; no downloaded browsers)."""
from __future__ import annotations

import os

import pytest

from tests.fixtures.services import require_service

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
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
