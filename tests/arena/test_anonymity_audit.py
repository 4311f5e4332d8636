"""Anonymity audit: many battles, and nothing before the vote names who answered.

Every frame a rater's socket receives before the vote, and the battle and history pages, are
searched for anything that could identify a contender: display name, organisation, aliases,
backend server name and URL, backend model id, decoding preset. After the vote the reveal
must name both.
"""
from __future__ import annotations

import asyncio
import json
import re

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client

from arena.models import ArenaModel, Battle
from tests.arena.test_battle_consumer import communicator_for, until

pytestmark = pytest.mark.django_db(transaction=True)

BATTLES = 20
TOPICS = ["tea", "rivers", "bread", "gardens", "clocks", "bridges", "maps", "kites", "soup", "trains"]
# Figures that could fingerprint a model (speed, length) are for after the vote too.
SECRET_KEYS = {"ttft_ms", "tpot_ms", "finish_reason", "output_tokens", "input_tokens", "error_code",
               "error_message", "generation", "identity_leak", "model", "name", "organisation", "preset"}


@pytest.fixture
def contenders(make_contender):
    return [
        make_contender("test-quick-1b", "tgi", display_name="Orca Prime 70B", organisation="Cetacean Research",
                       aliases=["OrcaBot", "Orca-P"]),
        make_contender("test-quick-1b", "ollama", display_name="Heron Swift 8B", organisation="Wading Birds Inc",
                       aliases=["Heron"]),
        make_contender("fault-target", "openai", display_name="Kestrel Mini", organisation="Raptor Works",
                       aliases=["Kestrel", "KM-1"]),
        make_contender("demo-terse-7b", "ollama", display_name="Puffin Large", organisation="Seabird Labs",
                       aliases=["Puffin"]),
    ]


def secrets_of(contender: ArenaModel) -> list[str]:
    server = contender.server
    host = server.base_url.split("//", 1)[-1]
    values = [contender.display_name, contender.organisation, *contender.aliases, server.name, server.base_url,
              host, contender.backend_model_id, contender.preset.name]
    return [v for v in values if v]


# A page's CSRF token is 64 random letters and digits: it may spell a short secret ("tgi") by chance.
CSRF_TOKEN = re.compile(r'(name="csrfmiddlewaretoken" value=")[A-Za-z0-9]+(")')


def leaks(blob: str, contenders) -> list[str]:
    lowered = CSRF_TOKEN.sub(r"\1\2", blob).lower()
    return [secret for c in contenders for secret in secrets_of(c) if secret.lower() in lowered]


def secret_keys(value) -> set[str]:
    found = set()
    if isinstance(value, dict):
        found |= SECRET_KEYS & set(value)
        for item in value.values():
            found |= secret_keys(item)
    elif isinstance(value, list):
        for item in value:
            found |= secret_keys(item)
    return found


async def until_stop_settles(ws) -> list[dict]:
    """Frames until a stop has taken effect: both sides ended, and either one was stopped or the
    stop came too late and was answered with a notice."""
    frames, ended = [], set()
    while not (ended == {"a", "b"} and any(f["type"] in ("notice", "stopped") for f in frames)):
        frame = await ws.receive_json_from(timeout=30)
        frames.append(frame)
        if frame["type"] in ("done", "stopped", "failed"):
            ended.add(frame["side"])
    return frames


def page_html(user, path: str) -> str:
    client = Client()
    try:
        client.force_login(user)
        response = client.get(path)
    finally:
        # This thread ends with the test's event loop: its connection goes back to the pool first.
        connection.close()
    assert response.status_code == 200, path
    return response.content.decode()


def test_nothing_identifies_a_contender_before_the_vote(contenders, django_user_model, settings,
                                                        in_process_generation):
    settings.ARENA_PROMPTS_PER_MINUTE = 1000
    rater_group = Group.objects.get_or_create(name="rater")[0]

    async def one_battle(number: int, rater) -> tuple[list[dict], list[str], dict]:
        ws = communicator_for(rater)
        assert (await ws.connect())[0]
        frames: list[dict] = []
        turns = 2 if number % 4 == 3 else 1
        for turn in range(turns):
            topic = TOPICS[(number + turn) % len(TOPICS)]
            await ws.send_json_to({"type": "prompt", "text": f"Tell me something about {topic}"})
            if number % 5 == 0:
                # Stop at once (queued or streaming, or harmlessly late), then regenerate.
                await ws.send_json_to({"type": "stop"})
                frames += await until_stop_settles(ws)
                await ws.send_json_to({"type": "regenerate"})
                frames += await until(ws, {"regenerated"})
            frames += await until(ws, {"ready"})
        pages = [await asyncio.to_thread(page_html, rater, "/battle/"),
                 await asyncio.to_thread(page_html, rater, "/history/")]
        await ws.send_json_to({"type": "vote", "winner": ["model_a", "model_b", "tie", "tie (bothbad)"][number % 4]})
        reveal = (await until(ws, {"reveal", "error"}))[-1]
        assert reveal["type"] == "reveal", reveal
        pages_after = await asyncio.to_thread(page_html, rater, "/history/")
        await ws.disconnect()
        return frames, pages, {"reveal": reveal, "history": pages_after}

    seen_frame_types: set[str] = set()
    pairs: set[frozenset] = set()
    for number in range(BATTLES):
        rater = django_user_model.objects.create_user(f"audit-{number}", password="pw-audit-123")
        rater.groups.add(rater_group)
        frames, pages, after = asyncio.run(one_battle(number, rater))
        seen_frame_types |= {f["type"] for f in frames}
        for frame in frames:
            assert not leaks(json.dumps(frame), contenders), (number, frame)
            assert not secret_keys(frame), (number, frame)
        for html in pages:
            assert not leaks(html, contenders), number

        battle = Battle.objects.select_related("model_a", "model_b").get(rater=rater)
        assert battle.anonymous is True
        pairs.add(frozenset((battle.model_a_id, battle.model_b_id)))
        sides = after["reveal"]["sides"]
        for side, contender in (("a", battle.model_a), ("b", battle.model_b)):
            assert sides[side]["name"] == contender.display_name
            assert sides[side]["organisation"] == contender.organisation
            assert contender.display_name in after["history"]

    # The audit covered the whole flow, including stop and regenerate, and several pairings.
    assert {"state", "turn", "delta", "done", "ready", "regenerated"} <= seen_frame_types
    assert len(pairs) >= 3
    assert Battle.objects.filter(status="voted").count() == BATTLES
