"""Stop, regenerate and named side-by-side battles over the battle WebSocket."""
from __future__ import annotations

import asyncio

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group

from arena.consumers import BattleConsumer
from arena.models import Battle, DecodingPreset, Generation, GenerationStatus, Vote
from tests.arena.test_battle_consumer import communicator_for, run, until

pytestmark = pytest.mark.django_db(transaction=True)


def user_in(django_user_model, name, *groups, staff=False):
    user = django_user_model.objects.create_user(name, password="pw-user-12345", is_staff=staff)
    for group in groups:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


@pytest.fixture
def rater(django_user_model):
    return user_in(django_user_model, "rater-ctl", "rater")


@pytest.fixture
def viewer(django_user_model):
    return user_in(django_user_model, "viewer-ctl", "viewer")


@pytest.fixture
def in_process(in_process_generation):
    return None


@pytest.fixture
def slow_pair(make_contender, preset):
    DecodingPreset.objects.filter(pk=preset.pk).update(max_new_tokens=400)
    return make_contender("demo-coder-34b", "openai"), make_contender("demo-coder-34b", "ollama")


def named_communicator(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(BattleConsumer.as_asgi(named=True), "/ws/battle/named/")
    communicator.scope["user"] = user
    return communicator


async def until_both(ws, kinds: set[str], timeout: float = 30.0) -> list[dict]:
    """Frames up to the point where each side has sent one of ``kinds``."""
    frames, ended = [], set()
    while ended != {"a", "b"}:
        frame = await ws.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] in kinds:
            ended.add(frame["side"])
    return frames


def joined(frames, side):
    return "".join(f["text"] for f in frames if f["type"] == "delta" and f["side"] == side)


def test_stop_then_regenerate_then_vote(rater, slow_pair, in_process):
    async def scenario():
        ws = communicator_for(rater)
        assert (await ws.connect())[0]
        await ws.send_json_to({"type": "prompt", "text": "Write a parser for dates."})
        before_stop = await until(ws, {"delta"})
        await ws.send_json_to({"type": "stop"})
        stopping = await until_both(ws, {"stopped"})
        await ws.send_json_to({"type": "vote", "winner": "model_a"})
        refused = await until(ws, {"error"})
        await ws.send_json_to({"type": "stop"})  # late: nothing left to stop
        late = await until(ws, {"notice"})
        await ws.send_json_to({"type": "regenerate"})
        regenerated = await until(ws, {"ready"}, timeout=60)
        await ws.send_json_to({"type": "vote", "winner": "model_a"})
        reveal = await until(ws, {"reveal"})
        await ws.send_json_to({"type": "regenerate"})
        after_vote = await until(ws, {"error"})
        await ws.disconnect()
        return before_stop + stopping, refused[-1], late[-1], regenerated, reveal[-1], after_vote[-1]

    first, refused, late, regenerated, reveal, after_vote = run(scenario())
    battle = Battle.objects.get(rater=rater)
    stored = {g.side: g for g in Generation.objects.filter(turn__battle=battle)}
    assert refused["code"] == "stopped"
    assert late == {"type": "notice", "message": "Nothing to stop."}
    # After "regenerated" only the new answers arrive, numbered from 1, and they are what is stored.
    marker = next(i for i, f in enumerate(regenerated) if f["type"] == "regenerated")
    fresh = regenerated[marker + 1:]
    for side in "ab":
        assert stored[side].status == GenerationStatus.DONE
        assert joined(fresh, side) == stored[side].text
        seqs = [f["seq"] for f in fresh if f["type"] == "delta" and f["side"] == side]
        assert seqs == list(range(1, len(seqs) + 1))
        stopped_text = joined(first, side)
        # Same seed and prompt, so the stopped answer is a strict prefix of the full one.
        assert stopped_text and stored[side].text.startswith(stopped_text) and stored[side].text != stopped_text
    assert {f["type"] for f in fresh} <= {"delta", "done", "ready"}
    assert reveal["type"] == "reveal"
    assert after_vote["code"] == "already_voted" and "already has a vote" in after_vote["message"]
    assert Vote.objects.get(battle=battle).winner == "model_a"
    assert battle.turns.count() == 1


def test_regenerate_mid_stream_never_mixes_old_and_new_text(rater, slow_pair, in_process):
    async def scenario():
        ws = communicator_for(rater)
        await ws.connect()
        await ws.send_json_to({"type": "prompt", "text": "Write a parser for dates."})
        frames = await until(ws, {"delta"})
        while len([f for f in frames if f["type"] == "delta"]) < 4:
            frames.append(await ws.receive_json_from(timeout=30))
        await ws.send_json_to({"type": "regenerate"})
        frames += await until(ws, {"regenerated"})
        # A second tab joins while the new answers stream: it must get them whole, and only them.
        frames += await until(ws, {"delta"})
        battle_id = await asyncio.to_thread(lambda: Battle.objects.get(rater=rater).public_id.hex)
        other = communicator_for(rater)
        await other.connect()
        await other.send_json_to({"type": "resume", "battle": battle_id})
        resumed = await until(other, {"ready"}, timeout=60)
        after = await until(ws, {"ready"}, timeout=60)
        await ws.disconnect()
        await other.disconnect()
        return frames, after, resumed

    frames, after, resumed = run(scenario())
    battle = Battle.objects.get(rater=rater)
    stored = dict(Generation.objects.filter(turn__battle=battle).values_list("side", "text"))
    marker = next(i for i, f in enumerate(frames) if f["type"] == "regenerated")
    new_frames = frames[marker + 1:] + after
    state = resumed[0]
    assert state["type"] == "state"
    for side in "ab":
        assert joined(new_frames, side) == stored[side]
        snapshot = state["turns"][-1][side]
        assert snapshot["text"] + joined(resumed, side) == stored[side]


def test_named_mode_for_viewers_only_and_never_anonymous(viewer, rater, make_contender, in_process):
    a = make_contender("test-quick-1b", "tgi", display_name="Named Alpha")
    b = make_contender("test-quick-1b", "ollama", display_name="Named Beta")

    async def scenario():
        refused = await named_communicator(rater).connect()
        ws = named_communicator(viewer)
        assert (await ws.connect())[0]
        await ws.send_json_to({"type": "prompt", "text": "Hello there"})
        no_pick = await until(ws, {"error"})
        await ws.send_json_to({"type": "new", "model_a": a.pk, "model_b": a.pk})
        same = await until(ws, {"error"})
        await ws.send_json_to({"type": "new", "model_a": b.pk, "model_b": a.pk})
        state = await until(ws, {"state"})
        await ws.send_json_to({"type": "prompt", "text": "Hello there"})
        await until(ws, {"ready"})
        await ws.send_json_to({"type": "vote", "winner": "model_b"})
        reveal = await until(ws, {"reveal"})
        await ws.disconnect()
        return refused, no_pick[-1], same[-1], state[-1], reveal[-1]

    refused, no_pick, same, state, reveal = run(scenario())
    assert refused == (False, 4403)
    assert no_pick["code"] == "pick_models"
    assert same["code"] == "same_model"
    assert state["anonymous"] is False and state["names"] == {"a": "Named Beta", "b": "Named Alpha"}
    assert reveal["sides"]["a"]["name"] == "Named Beta"
    battle = Battle.objects.get(rater=viewer)
    assert battle.anonymous is False and battle.model_a == b
    assert Vote.objects.get(battle=battle).winner == "model_b"


def test_each_socket_resumes_only_its_own_kind_of_battle(django_user_model, make_contender, in_process):
    admin = user_in(django_user_model, "admin-ctl", staff=True)
    a = make_contender("test-quick-1b", "tgi")
    b = make_contender("test-quick-1b", "ollama")

    async def scenario():
        anonymous = communicator_for(admin)
        await anonymous.connect()
        await anonymous.send_json_to({"type": "new"})
        anonymous_id = (await until(anonymous, {"state"}))[-1]["battle"]
        named = named_communicator(admin)
        await named.connect()
        await named.send_json_to({"type": "new", "model_a": a.pk, "model_b": b.pk})
        named_state = (await until(named, {"state"}))[-1]
        await named.send_json_to({"type": "resume", "battle": anonymous_id})
        crossed = (await until(named, {"error", "state"}))[-1]
        await anonymous.send_json_to({"type": "resume", "battle": named_state["battle"]})
        crossed_back = (await until(anonymous, {"error", "state"}))[-1]
        await anonymous.disconnect()
        await named.disconnect()
        return named_state, crossed, crossed_back

    named_state, crossed, crossed_back = run(scenario())
    assert "names" in named_state
    assert crossed["code"] == "not_found" and crossed_back["code"] == "not_found"
    assert sorted(Battle.objects.values_list("anonymous", flat=True)) == [False, True]


def test_named_page_for_viewers_and_admins_only(client, viewer, rater, django_user_model, make_contender):
    make_contender("test-quick-1b", "tgi", display_name="Named Alpha")
    client.force_login(viewer)
    page = client.get("/battle/named/")
    assert page.status_code == 200
    assert b"Named Alpha" in page.content and b"/ws/battle/named/" not in page.content
    assert b'data-mode="named"' in page.content
    client.force_login(rater)
    assert client.get("/battle/named/").status_code == 403
    client.force_login(user_in(django_user_model, "admin-page", staff=True))
    assert client.get("/battle/named/").status_code == 200
    client.logout()
    assert client.get("/battle/named/").status_code == 302  # to the login page
