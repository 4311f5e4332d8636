"""A browser that sends its vote and disconnects at once: the vote is stored exactly once."""
from __future__ import annotations

import time

import httpx
import pytest
from django.conf import settings

from arena.models import Battle, BattleStatus, Vote
from tests.faults.conftest import BrowserSocket, last_is, session_cookie, start_web

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def asgi_server(worker_env):
    """A real uvicorn process on the test database and Redis; it runs the generations itself
    (the same task code, in its thread pool), since this test is about the vote, not the worker."""
    web, base = start_web({**worker_env, "GENERATION_IN_PROCESS": "true"})
    yield base
    web.stop()


def test_vote_then_immediate_disconnect_stores_one_vote_and_reconnect_sees_it(asgi_server, contender_on, rater):
    a = contender_on("test-quick-1b", "ollama")
    b = contender_on("demo-terse-7b", "openai")
    cookie = session_cookie(rater)
    voted = []
    for winner in ("model_a", "tie", "model_b"):
        ws = BrowserSocket(asgi_server, cookie)
        ws.send({"type": "prompt", "text": f"Question for {winner}?"})
        frames = ws.until(last_is("ready", "failed", "error"))
        assert frames[-1]["type"] == "ready", frames[-1]
        public_id = next(f["battle"] for f in frames if f["type"] == "state")
        ws.send({"type": "vote", "winner": winner})
        ws.close()  # gone before any answer could arrive
        voted.append((public_id, winner))

    for public_id, winner in voted:
        deadline = time.monotonic() + 10
        while not Vote.objects.filter(battle__public_id=public_id).exists():
            assert time.monotonic() < deadline, f"the vote on {public_id} was lost"
            time.sleep(0.1)

        # The browser comes back: the battle is voted, and a second vote is refused.
        ws = BrowserSocket(asgi_server, cookie)
        ws.send({"type": "resume", "battle": public_id})
        state = ws.until(last_is("state", "error"))[-1]
        ws.send({"type": "vote", "winner": "model_a" if winner != "model_a" else "model_b"})
        second = ws.until(last_is("reveal", "error"))[-1]
        ws.close()
        assert state["type"] == "state" and state["status"] == BattleStatus.VOTED and not state["can_vote"]
        assert second["type"] == "error" and second["code"] == "already_voted"
        battle = Battle.objects.get(public_id=public_id)
        assert battle.status == BattleStatus.VOTED and battle.revealed_at is not None
        assert list(Vote.objects.filter(battle=battle).values_list("winner", flat=True)) == [winner]

    # The reveal is there for the rater: their history names both contenders of the voted battles.
    history = httpx.get(f"{asgi_server}/history/", cookies={settings.SESSION_COOKIE_NAME: cookie}, timeout=10)
    assert history.status_code == 200
    assert a.display_name in history.text and b.display_name in history.text
    assert Vote.objects.filter(rater=rater).count() == 3
