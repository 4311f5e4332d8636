"""Stop and Regenerate in Chromium, against the production topology (uvicorn, Celery, PostgreSQL, Redis)."""
from __future__ import annotations

from django.contrib.auth.models import Group

from arena.models import Battle, DecodingPreset, Generation, GenerationStatus, Vote
from tests.e2e.test_battle_browser import is_subsequence, log_in, words

BOTH_STATUSES = ("document.querySelector('#pane-a .status').textContent === '{0}' && "
                 "document.querySelector('#pane-b .status').textContent === '{0}'")


def test_rater_stops_regenerates_then_votes(page, asgi_server, celery_worker_process, django_user_model,
                                            make_contender, preset):
    DecodingPreset.objects.filter(pk=preset.pk).update(max_new_tokens=400)  # long enough to stop half-way
    make_contender("demo-coder-34b", "openai")
    make_contender("demo-coder-34b", "ollama")
    rater = django_user_model.objects.create_user("browser-stopper", password="pw-browser-123")
    rater.groups.add(Group.objects.get_or_create(name="rater")[0])
    log_in(page, asgi_server, "browser-stopper", "pw-browser-123")
    page.wait_for_selector("body[data-connected=true]")
    assert page.locator("#stop").is_disabled() and page.locator("#regenerate").is_disabled()

    page.fill("#prompt", "Write a parser for dates.")
    page.click("#prompt-form button[type=submit]")
    page.wait_for_function("document.querySelector('#pane-a .answer').textContent.length > 0 && "
                           "document.querySelector('#pane-b .answer').textContent.length > 0", timeout=30_000)
    page.click("#stop")
    page.wait_for_function(BOTH_STATUSES.format("stopped"), timeout=15_000)
    assert "Stopped" in page.locator("#message").inner_text()
    assert page.locator("button[data-vote=model_a]").is_disabled()
    battle = Battle.objects.get(rater=rater)
    stopped = {g.side: g.text for g in Generation.objects.filter(turn__battle=battle)}
    assert set(Generation.objects.filter(turn__battle=battle).values_list("status", flat=True)) == {
        GenerationStatus.STOPPED}
    for side in "ab":
        # The pane keeps the text so far: the stored words, as rendered.
        shown, stored = words(page.locator(f"#pane-{side} .answer").inner_text()), words(stopped[side])
        assert shown and is_subsequence(shown, stored), (" ".join(shown), " ".join(stored))
        assert len(shown) >= 0.8 * len(stored)

    page.keyboard.press("1")  # a stopped turn takes no vote
    assert not Vote.objects.filter(battle=battle).exists()

    page.click("#regenerate")
    page.wait_for_function(BOTH_STATUSES.format("finished"), timeout=30_000)
    page.wait_for_function("!document.querySelector('button[data-vote=model_a]').disabled", timeout=10_000)
    final = {g.side: g for g in Generation.objects.filter(turn__battle=battle)}
    for side in "ab":
        assert final[side].status == GenerationStatus.DONE
        assert final[side].text.startswith(stopped[side]) and len(final[side].text) > len(stopped[side])
    assert page.locator("#prompts li").count() == 1

    page.keyboard.press("1")
    page.wait_for_selector("#reveal .revealed")
    assert Vote.objects.get(battle=battle).winner == "model_a"
    assert page.locator("#regenerate").is_disabled()


def test_code_in_answers_renders_cleanly_and_safely(page, asgi_server, django_user_model):
    rater = django_user_model.objects.create_user("browser-reader", password="pw-browser-123")
    rater.groups.add(Group.objects.get_or_create(name="rater")[0])
    log_in(page, asgi_server, "browser-reader", "pw-browser-123")
    source = ("```python\ndef parse(line):\n    # keep the class order\n    s = 'in' + \"for\"\n    return s\n```\n"
              "<img src=x onerror=\"window.pwned=1\"> **bold**")
    rendered = page.evaluate("""(source) => {
        const box = document.querySelector('#pane-a .answer');
        box.innerHTML = ArenaMarkdown.render(source);
        return { text: box.innerText, images: box.querySelectorAll('img').length,
                 keywords: Array.from(box.querySelectorAll('.tok-kw')).map((e) => e.textContent),
                 comments: Array.from(box.querySelectorAll('.tok-com')).map((e) => e.textContent) };
    }""", source)
    # Highlighting wraps each keyword once and never leaks its own markup into the text.
    assert "tok-" not in rendered["text"] and "span" not in rendered["text"]
    assert rendered["keywords"] == ["def", "return"]
    assert rendered["comments"] == ["# keep the class order"]
    assert rendered["images"] == 0 and "<img" in rendered["text"]
    assert page.evaluate("window.pwned === undefined")


def test_viewer_compares_two_models_by_name(page, asgi_server, celery_worker_process, django_user_model,
                                            make_contender):
    alpha = make_contender("test-quick-1b", "tgi", display_name="Named Alpha")
    beta = make_contender("test-quick-1b", "ollama", display_name="Named Beta")
    viewer = django_user_model.objects.create_user("browser-viewer", password="pw-browser-123")
    viewer.groups.add(Group.objects.get_or_create(name="viewer")[0])
    log_in(page, asgi_server, "browser-viewer", "pw-browser-123", next_path="/battle/named/")
    page.wait_for_selector("body[data-connected=true]")
    page.select_option("#pick-a", str(beta.pk))
    page.select_option("#pick-b", str(alpha.pk))
    page.click("#pick-form button[type=submit]")
    page.wait_for_function("document.querySelector('#pane-a .title').textContent.includes('Named Beta')",
                           timeout=10_000)
    assert "Named Alpha" in page.locator("#pane-b .title").inner_text()
    page.fill("#prompt", "What is tea?")
    page.click("#prompt-form button[type=submit]")
    page.wait_for_function(BOTH_STATUSES.format("finished"), timeout=30_000)
    page.wait_for_function("!document.querySelector('button[data-vote=model_a]').disabled", timeout=10_000)
    page.keyboard.press("3")  # tie
    page.wait_for_selector("#reveal .revealed")
    battle = Battle.objects.get(rater=viewer)
    assert battle.anonymous is False and (battle.model_a, battle.model_b) == (beta, alpha)
    assert Vote.objects.get(battle=battle).winner == "tie"
