"""Who may open what: every URL the project routes, and every WebSocket endpoint, for each role.

The HTTP table below must name every URL the resolver knows (Django admin internals aside): a new
URL fails ``test_the_table_lists_every_url`` until someone decides, here, who may open it.
"""
from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from arena.models import Battle, Turn, Vote
from leaderboard.selectors import snapshot_latest
from leaderboard.services import leaderboard_refresh
from tests.leaderboard.conftest import simulate_votes
from tests.leaderboard.test_snapshots import arena, quick  # noqa: F401 (fixtures)
from tests.security.conftest import ROLES, client_for, make_user, session_cookie, ws

LOGIN = "login"  # 302 to the site's login page, with ?next=
ADMIN_LOGIN = "admin-login"  # 302 to the admin's login page

VIEWERS_ONLY = {"anonymous": LOGIN, "rater": 403, "viewer": 200, "admin": 200}
EVERYONE = {role: 200 for role in ROLES}


@dataclass(frozen=True)
class Row:
    get: dict[str, object]
    args: tuple = ()  # names of objects from the ``objects`` fixture, or literal strings
    post: dict[str, object] = field(default_factory=dict)


TABLE: dict[str, Row] = {
    "home": Row(get={"anonymous": LOGIN, "rater": 200, "viewer": 200, "admin": 200}),
    "battle": Row(get={"anonymous": LOGIN, "rater": 200, "viewer": 403, "admin": 200}),
    "battle_named": Row(get={"anonymous": LOGIN, "rater": 403, "viewer": 200, "admin": 200}),
    "history": Row(get={"anonymous": LOGIN, "rater": 200, "viewer": 403, "admin": 200}),
    # Liveness for load balancers: public by design, and it says only "ok" or which dependency failed.
    "healthz": Row(get=EVERYONE),
    "metrics": Row(get={"anonymous": 403, "rater": 403, "viewer": 403, "admin": 200},
                   post={role: 405 for role in ROLES}),
    "login": Row(get=EVERYONE),
    # Logging out is a POST (with a CSRF token); a GET (a link, an <img>) cannot log anyone out.
    "logout": Row(get={role: 405 for role in ROLES}),
    "leaderboard:board": Row(get=VIEWERS_ONLY),
    "leaderboard:snapshots": Row(get=VIEWERS_ONLY),
    "leaderboard:snapshot": Row(get=VIEWERS_ONLY, args=("snapshot",)),
    "leaderboard:benchmarks": Row(get=VIEWERS_ONLY),
    "leaderboard:model": Row(get=VIEWERS_ONLY, args=("alpha",)),
    "leaderboard:board-json": Row(get=VIEWERS_ONLY),
    "leaderboard:board-csv": Row(get=VIEWERS_ONLY),
    "leaderboard:history-json": Row(get=VIEWERS_ONLY),
    "leaderboard:snapshot-json": Row(get=VIEWERS_ONLY, args=("snapshot",)),
    "leaderboard:snapshot-csv": Row(get=VIEWERS_ONLY, args=("snapshot",)),
    "leaderboard:model-json": Row(get=VIEWERS_ONLY, args=("alpha",)),
    "leaderboard:benchmarks-json": Row(get=VIEWERS_ONLY),
    "leaderboard:plotly-js": Row(get=VIEWERS_ONLY),
    # POST only; sessions are checked for CSRF (see test_csrf); staff only. An admin posting no file
    # gets 400 (nothing imported), everyone else a JSON 401/403 rather than a login redirect.
    "leaderboard:harness-import-api": Row(get={role: 405 for role in ROLES},
                                          post={"anonymous": 401, "rater": 403, "viewer": 403, "admin": 400}),
    "admin:index": Row(get={"anonymous": ADMIN_LOGIN, "rater": ADMIN_LOGIN, "viewer": ADMIN_LOGIN, "admin": 200}),
    "admin:arena_backendserver_changelist": Row(
        get={"anonymous": ADMIN_LOGIN, "rater": ADMIN_LOGIN, "viewer": ADMIN_LOGIN, "admin": 200}),
    "admin:arena_backendserver_change": Row(
        get={"anonymous": ADMIN_LOGIN, "rater": ADMIN_LOGIN, "viewer": ADMIN_LOGIN, "admin": 200}, args=("server",)),
}

# Admin internals (every model's add/change/delete/history page, jsi18n, autocomplete...) are the
# Django admin's own, guarded by admin_view; the table keeps the index and one model's pages.
ADMIN_NAMESPACE = "admin:"


def all_url_names() -> set[str]:
    names: set[str] = set()

    def walk(patterns, namespace: str, prefix: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                inner = namespace + (f"{pattern.namespace}:" if pattern.namespace else "")
                walk(pattern.url_patterns, inner, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                # An unnamed pattern is listed by its route, so it cannot slip past the table.
                names.add(namespace + (pattern.name or f"<unnamed {prefix}{pattern.pattern}>"))

    walk(get_resolver().url_patterns, "", "")
    return names


def test_the_table_lists_every_url():
    routed = all_url_names()
    public = {name for name in routed if not name.startswith(ADMIN_NAMESPACE)}
    missing = public - set(TABLE)
    assert not missing, f"URLs with no row in the access table (add them to TABLE): {sorted(missing)}"
    stale = set(TABLE) - routed
    assert not stale, f"rows for URLs that no longer exist: {sorted(stale)}"


@pytest.fixture
def objects(arena, quick):  # noqa: F811
    """A small leaderboard (so snapshot and model pages answer 200, not an empty 404) and a server."""
    arena.contender("alpha")
    arena.contender("beta")
    arena.contender("gamma")
    arena.votes(simulate_votes({"alpha": 0.8, "beta": 0.0, "gamma": -0.5}, 60, seed=2), rater=arena.user("voter"))
    leaderboard_refresh(categories=["overall"])
    return {"snapshot": snapshot_latest(category="overall").pk, "server": arena.server.pk, "alpha": "alpha"}


def url_of(name: str, row: Row, objects: dict) -> str:
    return reverse(name, args=[objects.get(arg, arg) for arg in row.args])


def check(response, expected, url: str, role: str, method: str) -> str | None:
    """None when the response is what the table says, else a line describing the difference."""
    location = response.get("Location", "")
    if expected == LOGIN:
        ok = response.status_code == 302 and location.startswith("/accounts/login/?next=")
    elif expected == ADMIN_LOGIN:
        ok = response.status_code == 302 and location.startswith("/admin/login/?next=")
    else:
        ok = response.status_code == expected
    if ok:
        return None
    return f"{method} {url} as {role}: expected {expected}, got {response.status_code} {location}".rstrip()


@pytest.mark.django_db
def test_every_url_answers_each_role_as_the_table_says(objects, django_user_model, require_postgres):
    users = {role: make_user(django_user_model, role, "-matrix") for role in ROLES}
    problems = []
    for role in ROLES:
        client = client_for(users[role])
        for name, row in TABLE.items():
            url = url_of(name, row, objects)
            problems.append(check(client.get(url), row.get[role], url, role, "GET"))
            if row.post:
                problems.append(check(client.post(url), row.post[role], url, role, "POST"))
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- WebSockets, through the real ASGI stack

WS_ENDPOINTS = {
    "/ws/battle/": {"anonymous": False, "rater": True, "viewer": False, "admin": True},
    "/ws/battle/named/": {"anonymous": False, "rater": False, "viewer": True, "admin": True},
    "/ws/admin/preview/": {"anonymous": False, "rater": False, "viewer": False, "admin": True},
}


async def connect(communicator) -> tuple[bool, object]:
    connected, code = await communicator.connect(timeout=10)
    if connected:
        await communicator.disconnect()
    return connected, code


def test_the_routed_websocket_paths_are_the_ones_tested():
    from arena.routing import websocket_urlpatterns

    assert {"/" + str(p.pattern) for p in websocket_urlpatterns} == set(WS_ENDPOINTS)


@pytest.mark.django_db(transaction=True)
def test_websocket_endpoints_accept_exactly_the_roles_allowed(role_users, require_redis):
    cookies = {role: session_cookie(user) if user else None for role, user in role_users.items()}

    async def scenario():
        outcome = {}
        for path in WS_ENDPOINTS:
            for role in ROLES:
                outcome[path, role] = await connect(ws(path, cookie=cookies[role]))
        return outcome

    outcome = asyncio.run(scenario())
    for path, allowed in WS_ENDPOINTS.items():
        for role in ROLES:
            connected, code = outcome[path, role]
            assert connected is allowed[role], (path, role, code)
            if not connected:
                assert code == 4403, (path, role, code)  # refused by the consumer, after the origin check


@pytest.mark.django_db(transaction=True)
def test_a_foreign_or_missing_origin_is_refused_even_with_a_staff_session(role_users, require_redis):
    cookie = session_cookie(role_users["admin"])
    origins = [b"http://evil.example", b"https://localhost.evil.example", b"null", b"http://localhost.", None]

    async def scenario():
        results = {}
        for path in WS_ENDPOINTS:
            results[path, "ok"] = await connect(ws(path, cookie=cookie))
            for origin in origins:
                results[path, origin] = await connect(ws(path, cookie=cookie, origin=origin))
        return results

    results = asyncio.run(scenario())
    for path in WS_ENDPOINTS:
        assert results[path, "ok"][0] is True
        for origin in origins:
            # Refused before any consumer runs (the validator's denial, not the consumer's 4403).
            # No Origin at all is refused as well (AllowedHostsOriginValidator allows a missing one
            # only with ALLOWED_HOSTS = ["*"]). That breaks no browser: every browser sends Origin on
            # a WebSocket handshake and a page cannot remove it, so a cross-site page is always
            # caught here. A script can send any Origin it likes, so for non-browser clients the
            # guard is the session itself (see the role test above), not this header.
            connected, code = results[path, origin]
            assert connected is False and code != 4403, (path, origin, code)


@pytest.mark.django_db(transaction=True)
def test_frames_of_each_action_from_a_role_that_may_not_act(role_users, django_user_model, make_contender,
                                                           require_redis):
    """Accepted sockets, actions beyond the role: someone else's battle, the other mode's battles."""
    a, b = make_contender("test-quick-1b", "tgi"), make_contender("demo-terse-7b", "tgi")
    owner = make_user(django_user_model, "rater", "-owner")
    battle = Battle.objects.create(public_id=uuid.uuid4(), rater=owner, model_a=a, model_b=b)
    Turn.objects.create(battle=battle, index=1, prompt="owner's prompt")
    foreign = battle.public_id.hex
    cookies = {role: session_cookie(user) for role, user in role_users.items() if user}

    frames_for_battle = [{"type": "resume", "battle": foreign}, {"type": "vote", "winner": "model_a"},
                         {"type": "stop"}, {"type": "regenerate"}]

    async def replies(path: str, cookie: str, frames: list[dict]) -> list[dict]:
        communicator = ws(path, cookie=cookie)
        assert (await communicator.connect(timeout=10))[0]
        out = []
        for frame in frames:
            await communicator.send_json_to(frame)
            out.append(await communicator.receive_json_from(timeout=10))
        await communicator.disconnect()
        return out

    async def scenario():
        got = {}
        # A rater and an admin on the anonymous socket: someone else's battle, then actions without one.
        for role in ("rater", "admin"):
            got["/ws/battle/", role] = await replies("/ws/battle/", cookies[role], frames_for_battle)
        # Viewer and admin on the named socket: the rater's anonymous battle is not theirs either.
        for role in ("viewer", "admin"):
            got["/ws/battle/named/", role] = await replies("/ws/battle/named/", cookies[role], frames_for_battle)
        # The admin-only preview frame means nothing on a battle socket.
        got["preview-on-battle"] = await replies("/ws/battle/", cookies["rater"], [
            {"type": "preview", "contender": a.pk, "prompt": "hi"}])
        return got

    got = asyncio.run(scenario())
    for key in [k for k in got if isinstance(k, tuple)]:
        resume, vote, stop, regenerate = got[key]
        assert resume == {"type": "error", "code": "not_found", "message": "No such battle."}, key
        assert vote["type"] == "error" and vote["code"] == "no_battle", key
        assert stop == {"type": "notice", "message": "Nothing to stop."}, key
        assert regenerate["type"] == "error" and regenerate["code"] == "no_turn", key
    assert got["preview-on-battle"] == [{"type": "error", "message": "Unknown or malformed frame."}]
    battle.refresh_from_db()
    assert battle.status == "active" and not Vote.objects.exists()
    assert Turn.objects.filter(battle=battle).count() == 1 and Battle.objects.count() == 1
