"""Hostile prompts, answers and names in a real Chromium: nothing runs, nothing is injected.

A battle is played through the production topology (uvicorn, a Celery worker, PostgreSQL, Redis)
against a backend whose answers we write: markup, event handlers, javascript: links and code-fence
tricks. Then the history, the reveal, the admin pages and the leaderboard are checked the same way.
"""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from arena.models import Battle, BackendServer, Vote
from arena.roles import RATER, VIEWER
from leaderboard.services import leaderboard_refresh
# The same Chromium as the browser tests, and the same allowance for this process's ORM calls.
from tests.e2e.conftest import _orm_beside_playwright, browser  # noqa: F401 (fixtures)
from tests.leaderboard.conftest import simulate_votes
from tests.leaderboard.test_snapshots import arena, quick  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e

PWN = "window.__pwned=1"
# Every injected element carries an id starting with "pwn": if one exists in the DOM, markup got through.
HOSTILE_PROMPT = (f'<script>{PWN}</script><img id="pwn-prompt" src=x onerror="{PWN}"> '
                  f"[x](javascript:{PWN}) <svg id=pwn-prompt-svg onload={PWN}>")
HOSTILE_ANSWER_A = "\n".join([
    f"<script>{PWN}</script>",
    f'<img id="pwn-a-img" src=x onerror="{PWN}">',
    f"[click me](javascript:{PWN})",
    f'<a id="pwn-a-link" href="javascript:{PWN}">a link</a>',
    f"**<img id=pwn-a-bold src=x onerror={PWN}>**",
    f"# <iframe id=pwn-a-frame src=javascript:{PWN}></iframe>",
    f"- <details id=pwn-a-details open ontoggle={PWN}>",
    f"1. `<svg id=pwn-a-inline onload={PWN}>`",
    f"&lt;img id=pwn-a-entity src=x onerror={PWN}&gt;",
    f"\u202e<img id=pwn-a-rtl src=x onerror={PWN}>",
    "",
    "The end.",
])
HOSTILE_ANSWER_B = "\n".join([
    "Here is code:",
    # A fence "language" that tries to close the attribute it is written into.
    f'```" onmouseover="{PWN}" x="><img id=pwn-b-lang src=x onerror={PWN}>',
    f"<img id=pwn-b-code src=x onerror={PWN}>",
    "```",
    "```python",
    f"s = '<img id=pwn-b-str src=x onerror={PWN}>'  # </code></pre><img id=pwn-b-com src=x onerror={PWN}>",
    f'class A: x = "</span><script>{PWN}</script>"',
    "```",
    # An unclosed fence: the rest is still code, still escaped.
    "```",
    f"<script>{PWN}</script><img id=pwn-b-open src=x onerror={PWN}>",
])
HOSTILE_NAME_A = f"<img id=pwn-name-a src=x onerror={PWN}>Alpha"
HOSTILE_NAME_B = f"<script>{PWN}</script>Beta"
HOSTILE_ORG = f'"><img id=pwn-org src=x onerror={PWN}>'

INSPECT = """() => {
  const all = Array.from(document.querySelectorAll('*'));
  const withHandlers = all.filter((el) => Array.from(el.attributes).some((a) => a.name.toLowerCase().startsWith('on')));
  const urlAttrs = ['href', 'src', 'action', 'formaction', 'xlink:href', 'data'];
  const jsUrls = all.filter((el) => urlAttrs.some((n) => /^\\s*javascript:/i.test(el.getAttribute(n) || '')));
  const scripts = Array.from(document.scripts).filter((s) => (s.type || 'text/javascript') !== 'application/json'
                                                       && s.textContent.includes('__pwned'));
  return {
    pwned: typeof window.__pwned,
    injected: all.filter((el) => (el.id || '').startsWith('pwn')).map((el) => el.outerHTML.slice(0, 100)),
    handlers: withHandlers.map((el) => el.outerHTML.slice(0, 100)),
    jsUrls: jsUrls.map((el) => el.outerHTML.slice(0, 100)),
    scripts: scripts.length,
  };
}"""
CLEAN = {"pwned": "undefined", "injected": [], "handlers": [], "jsUrls": [], "scripts": 0}


@pytest.fixture
def new_page(browser):
    contexts = []

    def make():
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.dialogs = []
        page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
        return page

    yield make
    for context in contexts:
        context.close()


def log_in(page, base: str, username: str, password: str, next_path: str) -> None:
    page.goto(f"{base}/accounts/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{next_path}")


def assert_clean(page, where: str) -> None:
    page.wait_for_load_state("load")
    page.wait_for_timeout(150)  # let any injected onerror/onload fire before looking
    found = page.evaluate(INSPECT)
    assert found == CLEAN, f"{where}: {found}"
    assert page.dialogs == [], f"{where}: dialogs {page.dialogs}"


def test_hostile_battle_in_chromium(new_page, redis_client, asgi_server, celery_worker_process, scripted_contender,
                                   django_user_model):
    a = scripted_contender("hostile-a", HOSTILE_ANSWER_A, display_name=HOSTILE_NAME_A, organisation=HOSTILE_ORG)
    b = scripted_contender("hostile-b", HOSTILE_ANSWER_B, display_name=HOSTILE_NAME_B, organisation=HOSTILE_ORG)
    BackendServer.objects.filter(pk=a.server_id).update(name=f"<img id=pwn-server src=x onerror={PWN}>")
    rater = django_user_model.objects.create_user("xss-rater", password="pw-xss-rater-1")
    rater.groups.add(Group.objects.get_or_create(name=RATER)[0])
    django_user_model.objects.create_superuser("xss-admin", "xss@example.com", "pw-xss-admin-1")

    page = new_page()
    log_in(page, asgi_server, "xss-rater", "pw-xss-rater-1", "/battle/")
    page.wait_for_selector("body[data-connected=true]")
    page.fill("#prompt", HOSTILE_PROMPT)
    page.click("#prompt-form button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#prompts li').length === 1", timeout=10_000)
    page.wait_for_function("document.querySelector('#pane-a .status').textContent === 'finished' && "
                           "document.querySelector('#pane-b .status').textContent === 'finished'", timeout=30_000)
    assert_clean(page, "battle, answers in")
    # Shown, as text: escaped rather than dropped.
    assert page.locator("#prompts li").inner_text() == HOSTILE_PROMPT
    # The pair is dealt in random order: which pane shows which answer is not known in advance.
    shown = page.locator("#pane-a .answer").inner_text() + "\n" + page.locator("#pane-b .answer").inner_text()
    for piece in (f"<script>{PWN}</script>", f"[click me](javascript:{PWN})", f"<img id=pwn-a-bold src=x",
                  f'<a id="pwn-a-link" href="javascript:{PWN}">a link</a>', f"&lt;img id=pwn-a-entity",
                  f"<img id=pwn-b-code src=x onerror={PWN}>", "</code></pre><img id=pwn-b-com",
                  f"<img id=pwn-b-open src=x onerror={PWN}>"):
        assert piece in shown, piece
    assert page.locator("#battle a, #battle img, #battle iframe, #battle svg, #battle script").count() == 0

    page.wait_for_function("!document.querySelector('button[data-vote=model_a]').disabled", timeout=10_000)
    page.keyboard.press("1")
    page.wait_for_selector("#reveal .revealed")
    assert_clean(page, "reveal")
    revealed = page.locator("#reveal").inner_text()
    battle = Battle.objects.get(rater=rater)
    assert battle.model_a.display_name in revealed and battle.model_b.display_name in revealed
    assert HOSTILE_ORG in revealed
    assert Vote.objects.get(battle=battle).winner == "model_a"

    page.goto(f"{asgi_server}/history/")
    assert_clean(page, "history")
    history = page.locator("#history").inner_text()
    assert HOSTILE_NAME_A in history and HOSTILE_NAME_B in history and "<script>" in history

    admin = new_page()
    log_in(admin, asgi_server, "xss-admin", "pw-xss-admin-1", "/")
    pages = [reverse("admin:index"), reverse("admin:arena_battle_changelist"),
             reverse("admin:arena_battle_change", args=[battle.pk]), reverse("admin:arena_arenamodel_changelist"),
             reverse("admin:arena_arenamodel_change", args=[a.pk]), reverse("admin:arena_backendserver_changelist"),
             reverse("admin:arena_backendserver_change", args=[a.server_id]),
             reverse("admin:arena_arenamodel_test_connection", args=[a.pk]),
             reverse("admin:arena_arenamodel_changelist") + "?q=%3Cimg", "/battle/named/"]
    for path in pages:
        response = admin.goto(f"{asgi_server}{path}")
        assert response.status == 200, path
        assert_clean(admin, path)
    admin.goto(f"{asgi_server}{reverse('admin:arena_arenamodel_changelist')}")
    assert HOSTILE_NAME_A in admin.locator("#result_list").inner_text()


def test_hostile_model_names_on_the_leaderboard(new_page, asgi_server, arena, quick, django_user_model):  # noqa: F811
    names = [HOSTILE_NAME_A, HOSTILE_NAME_B, f'x" onmouseover="{PWN}', f"<a id=pwn-lb href=javascript:{PWN}>z</a>"]
    for name in names:
        arena.contender(name, organisation=HOSTILE_ORG, licence=f"<b id=pwn-licence>mit</b>")
    arena.votes(simulate_votes({name: 0.3 * k for k, name in enumerate(names)}, 80, seed=4), rater=arena.user("v"))
    leaderboard_refresh(categories=["overall"])
    viewer = django_user_model.objects.create_user("xss-viewer", password="pw-xss-viewer-1")
    viewer.groups.add(Group.objects.get_or_create(name=VIEWER)[0])
    page = new_page()
    log_in(page, asgi_server, "xss-viewer", "pw-xss-viewer-1", "/leaderboard/")
    page.wait_for_selector(".js-plotly-plot", timeout=15_000)  # the charts drew (names are in them)
    assert_clean(page, "leaderboard")
    assert HOSTILE_NAME_A in page.inner_text("body")
    for path in [reverse("leaderboard:model", args=[names[0]]), reverse("leaderboard:model", args=[names[3]]),
                 reverse("leaderboard:snapshots")]:
        response = page.goto(f"{asgi_server}{path}")
        assert response.status == 200, path
        assert_clean(page, path)


def test_the_inspection_sees_an_injection_when_there_is_one(new_page):
    """The DOM check above must not pass vacuously: on a page that is injected, it reports each kind."""
    page = new_page()
    page.set_content(f'<img id="pwn-x" src=x onerror="{PWN}"><a href="javascript:{PWN}">x</a>'
                     f'<script>{PWN}</script><script type="application/json">"__pwned"</script>'
                     f'<button onclick="alert(1)">b</button>')
    page.click("button")
    page.wait_for_timeout(150)
    found = page.evaluate(INSPECT)
    assert found["pwned"] == "number"
    assert len(found["injected"]) == 1 and len(found["handlers"]) == 2 and len(found["jsUrls"]) == 1
    assert found["scripts"] == 1  # the JSON data block is not counted
    assert page.dialogs == ["1"]
