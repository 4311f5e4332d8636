"""A rater plays a two-turn battle in Chromium against the production topology.

Real processes: uvicorn (ASGI), a Celery worker, PostgreSQL, Redis, and the backend emulator.
"""
from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group

from arena.models import Battle, Generation, GenerationStatus, Vote


@pytest.fixture
def rater(django_user_model):
    user = django_user_model.objects.create_user("browser-rater", password="pw-browser-123")
    user.groups.add(Group.objects.get_or_create(name="rater")[0])
    return user


def log_in(page, base, username, password, next_path="/battle/"):
    page.goto(f"{base}/accounts/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{next_path}")


def test_rater_plays_two_turns_votes_and_sees_the_reveal(page, asgi_server, celery_worker_process, rater,
                                                          make_contender):
    a = make_contender("demo-terse-7b", "tgi")
    b = make_contender("demo-markdown-13b", "ollama")
    log_in(page, asgi_server, "browser-rater", "pw-browser-123")
    page.wait_for_selector("body[data-connected=true]")
    vote_a = page.locator("button[data-vote=model_a]")
    assert vote_a.is_disabled()

    for number, prompt in enumerate(("What is tea?", "And green tea?"), start=1):
        page.fill("#prompt", prompt)
        page.click("#prompt-form button[type=submit]")
        # The turn is acknowledged (listed) before its answers can be waited for.
        page.wait_for_function(f"document.querySelectorAll('#prompts li').length === {number}", timeout=10_000)
        page.wait_for_function("document.querySelector('#pane-a .status').textContent === 'finished' && "
                               "document.querySelector('#pane-b .status').textContent === 'finished'",
                               timeout=30_000)
        page.wait_for_function("!document.querySelector('button[data-vote=model_a]').disabled", timeout=10_000)
    html_before_vote = page.content()
    for contender in (a, b):
        assert contender.display_name not in html_before_vote
    assert page.locator("#prompts li").count() == 2
    assert page.locator("#pane-a .answer").inner_text().strip()

    page.keyboard.press("2")  # B is better
    page.wait_for_selector("#reveal .revealed")
    revealed = page.locator("#reveal").inner_text()
    battle = Battle.objects.get(rater=rater)
    assert battle.model_a.display_name in revealed and battle.model_b.display_name in revealed
    assert Vote.objects.get(battle=battle).winner == "model_b"
    assert battle.turns.count() == 2
    assert set(Generation.objects.filter(turn__battle=battle).values_list("status", flat=True)) == {
        GenerationStatus.DONE}
    shown = page.locator("#pane-b .answer").inner_text().strip()
    stored = Generation.objects.get(turn__battle=battle, turn__index=2, side="b").text
    # The pane shows the stored answer rendered as Markdown: its words, in order, without the markup.
    shown_words, stored_words = words(shown), words(stored)
    assert shown_words and is_subsequence(shown_words, stored_words)
    assert len(shown_words) >= 0.8 * len(stored_words)


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9]+", text)


def is_subsequence(needle: list[str], haystack: list[str]) -> bool:
    remaining = iter(haystack)
    return all(any(word == candidate for candidate in remaining) for word in needle)
