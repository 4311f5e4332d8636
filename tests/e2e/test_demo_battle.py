"""`make demo` for a new rater: log in with the printed demo account, play a battle, vote, see names.

Embedded default end to end: SQLite, the in-memory channel layer, generation inside the web
process, the built-in emulator as backends; a real Chromium drives it.
"""
from __future__ import annotations

from tests.e2e.test_demo import demo_server  # noqa: F401 (fixture)


def test_new_rater_plays_and_votes_in_the_demo(demo_server, page):  # noqa: F811
    base, log_path = demo_server
    page.goto(f"{base}/accounts/login/?next=/battle/")
    page.fill("#id_username", "rater")
    page.fill("#id_password", "rater-demo")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/battle/")
    page.wait_for_selector("body[data-connected=true]")
    page.fill("#prompt", "Write a haiku about tea.")
    page.click("#prompt-form button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#prompts li').length === 1", timeout=10_000)
    page.wait_for_function("!document.querySelector('button[data-vote=model_a]').disabled", timeout=60_000)
    assert page.locator("#pane-a .answer").inner_text().strip()
    assert page.locator("#pane-b .answer").inner_text().strip()
    assert "demo-" not in page.content()  # names stay hidden until the vote

    page.click("button[data-vote=tie]")
    page.wait_for_selector("#reveal .revealed")
    revealed = page.locator("#reveal .revealed").all_inner_texts()
    assert len(revealed) == 2 and all("demo-" in line for line in revealed), revealed
    page.goto(f"{base}/history/")
    assert "Tie" in page.locator("body").inner_text()
