"""The battle WebSocket as a client meets it: prompts, ordered deltas, vote, reveal, reconnect."""
from __future__ import annotations

import asyncio

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group

from arena.consumers import BattleConsumer
from arena.models import Battle, Vote

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def rater(django_user_model):
    user = django_user_model.objects.create_user("rater-ws", password="pw-rater-123")
    user.groups.add(Group.objects.get_or_create(name="rater")[0])
    return user


@pytest.fixture
def contenders(make_contender):
    return [make_contender("demo-terse-7b", "tgi"), make_contender("demo-markdown-13b", "ollama")]


def communicator_for(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(BattleConsumer.as_asgi(), "/ws/battle/")
    communicator.scope["user"] = user
    return communicator


async def until(communicator, kinds: set[str], timeout: float = 30.0) -> list[dict]:
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] in kinds:
            return frames


def texts_from(frames: list[dict]) -> dict[str, str]:
    out = {"a": "", "b": ""}
    for frame in frames:
        if frame["type"] == "delta":
            out[frame["side"]] += frame["text"]
    return out


def run(coro):
    return asyncio.run(coro)


def test_non_raters_are_refused(django_user_model, db):
    viewer = django_user_model.objects.create_user("viewer-ws", password="pw-viewer-123")
    viewer.groups.add(Group.objects.get_or_create(name="viewer")[0])

    async def scenario():
        connected, code = await communicator_for(viewer).connect()
        return connected, code

    assert run(scenario()) == (False, 4403)


def test_a_role_taken_away_or_an_account_disabled_stops_the_next_action(rater, contenders, django_user_model):
    from asgiref.sync import sync_to_async

    from arena.consumers import ContenderPreviewConsumer

    async def refused_after(change) -> tuple[dict, dict]:
        communicator = communicator_for(rater)
        connected, _ = await communicator.connect()
        assert connected
        await sync_to_async(change)()
        await communicator.send_json_to({"type": "prompt", "text": "Hello there"})
        frame = await communicator.receive_json_from(timeout=10)
        closed = await communicator.receive_output(timeout=10)
        await communicator.disconnect()
        return frame, closed

    frame, closed = run(refused_after(lambda: rater.groups.clear()))
    assert frame["type"] == "error" and frame["code"] == "forbidden"
    assert closed == {"type": "websocket.close", "code": 4403}
    assert Battle.objects.count() == 0  # the prompt started nothing

    rater.groups.add(Group.objects.get(name="rater"))
    frame, closed = run(refused_after(lambda: django_user_model.objects.filter(pk=rater.pk).update(is_active=False)))
    assert frame["code"] == "forbidden" and Battle.objects.count() == 0

    async def connect_disabled():
        return await communicator_for(rater).connect()

    assert run(connect_disabled()) == (False, 4403)  # and it cannot come back

    admin = django_user_model.objects.create_user("admin-ws", password="pw-admin-123", is_staff=True)

    async def preview_after_demotion():
        communicator = WebsocketCommunicator(ContenderPreviewConsumer.as_asgi(), "/ws/admin/preview/")
        communicator.scope["user"] = admin
        connected, _ = await communicator.connect()
        assert connected
        await sync_to_async(django_user_model.objects.filter(pk=admin.pk).update)(is_staff=False)
        await communicator.send_json_to({"type": "preview", "contender": contenders[0].pk, "prompt": "hi"})
        frame = await communicator.receive_json_from(timeout=10)
        await communicator.disconnect()
        return frame

    assert run(preview_after_demotion())["code"] == "forbidden"


def test_two_turn_battle_vote_and_reveal(rater, contenders, in_process_generation, monkeypatch):
    import channels.consumer

    cleanups = []  # Channels' per-message database clean-up (a thread hop): not for these sockets

    async def counted():
        cleanups.append(1)

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)

    async def scenario():
        ws = communicator_for(rater)
        assert (await ws.connect())[0]
        frames = []
        for prompt in ("Tell me about tea.", "And coffee?"):
            await ws.send_json_to({"type": "prompt", "text": prompt})
            frames += await until(ws, {"ready"})
        await ws.send_json_to({"type": "vote", "winner": "model_b"})
        frames += await until(ws, {"reveal"})
        await ws.send_json_to({"type": "vote", "winner": "model_a"})
        frames += await until(ws, {"error"})
        await ws.disconnect()
        return frames

    frames = run(scenario())
    battle = Battle.objects.get(rater=rater)
    assert battle.turns.count() == 2
    for side in "ab":
        seqs = [f["seq"] for f in frames if f["type"] == "delta" and f["side"] == side]
        # Each turn's sequence restarts at 1 and increases by one: nothing lost or reordered.
        runs = [list(g) for g in _split_runs(seqs)]
        assert len(runs) == 2 and all(r == list(range(1, len(r) + 1)) for r in runs)
    reveal = next(f for f in frames if f["type"] == "reveal")
    names = {reveal["sides"]["a"]["name"], reveal["sides"]["b"]["name"]}
    assert names == {battle.model_a.display_name, battle.model_b.display_name}
    assert frames[-1]["message"] == "This battle already has a vote."
    assert Vote.objects.get(battle=battle).winner == "model_b"
    before_reveal = frames[: frames.index(reveal)]
    for frame in before_reveal:
        for contender in contenders:
            assert contender.display_name not in str(frame)
    assert len([f for f in frames if f["type"] == "delta"]) > 4 and cleanups == []


def _split_runs(seqs):
    current = []
    for seq in seqs:
        if seq == 1 and current:
            yield current
            current = []
        current.append(seq)
    if current:
        yield current


def test_vote_before_completion_and_on_a_foreign_battle(rater, contenders, django_user_model, settings, monkeypatch):
    monkeypatch.setattr("workers.dispatch.enqueue", lambda task, *args, **kwargs: None)  # answers never finish
    other = django_user_model.objects.create_user("other", password="pw-other-123")
    other.groups.add(Group.objects.get(name="rater"))

    async def scenario():
        ws = communicator_for(rater)
        await ws.connect()
        await ws.send_json_to({"type": "prompt", "text": "hi"})
        await until(ws, {"turn"})
        await ws.send_json_to({"type": "vote", "winner": "model_a"})
        early = (await until(ws, {"error"}))[-1]
        battle_id = (await asyncio.to_thread(lambda: Battle.objects.get(rater=rater).public_id.hex))
        intruder = communicator_for(other)
        await intruder.connect()
        await intruder.send_json_to({"type": "resume", "battle": battle_id})
        foreign = (await until(intruder, {"error", "state"}))[-1]
        await intruder.send_json_to({"type": "vote", "winner": "model_a"})
        no_battle = (await until(intruder, {"error"}))[-1]
        await ws.disconnect()
        await intruder.disconnect()
        return early, foreign, no_battle

    early, foreign, no_battle = run(scenario())
    assert early["code"] == "not_finished"
    assert foreign == {"type": "error", "code": "not_found", "message": "No such battle."}
    assert no_battle["code"] == "no_battle"
    assert not Vote.objects.exists()


def test_malformed_frames_get_a_clear_error(rater, contenders):
    async def scenario():
        ws = communicator_for(rater)
        await ws.connect()
        replies = []
        for raw in ("not json", '{"type": "launch"}', "[1,2]", '{"type": "prompt", "text": 5}'):
            await ws.send_to(text_data=raw)
            replies.append(await ws.receive_json_from(timeout=5))
        await ws.send_to(text_data="x" * 70_000)
        replies.append(await ws.receive_json_from(timeout=5))
        await ws.disconnect()
        return replies

    replies = run(scenario())
    assert [r["type"] for r in replies] == ["error"] * 5
    assert replies[3]["message"] == "Type a prompt first."
    assert "64 KB" in replies[4]["message"]


def test_reconnect_mid_stream_gets_text_so_far_then_only_newer_deltas(rater, make_contender, emulator,
                                                                      in_process_generation):
    make_contender("demo-coder-34b", "openai")
    make_contender("demo-coder-34b", "ollama")

    async def scenario():
        first = communicator_for(rater)
        await first.connect()
        await first.send_json_to({"type": "prompt", "text": "Write a long story."})
        frames = await until(first, {"delta"})
        while len([f for f in frames if f["type"] == "delta"]) < 3:
            frames.append(await first.receive_json_from(timeout=30))
        await first.disconnect()  # the browser drops mid-stream
        battle_id = await asyncio.to_thread(lambda: Battle.objects.get(rater=rater).public_id.hex)
        second = communicator_for(rater)
        await second.connect()
        await second.send_json_to({"type": "resume", "battle": battle_id})
        after = []
        while True:
            frame = await second.receive_json_from(timeout=60)
            after.append(frame)
            # A battle that finished before the resume says so in its state (the page then
            # enables voting from it); one still streaming ends with "ready".
            if frame["type"] == "ready" or (frame["type"] == "state" and frame.get("can_vote")):
                break
        await second.disconnect()
        return after

    after = run(scenario())
    state = after[0]
    assert state["type"] == "state"
    last_turn = state["turns"][-1]
    final = {}
    for side in "ab":
        snapshot = last_turn[side]
        text = snapshot["text"]
        live = [f for f in after if f["type"] == "delta" and f["side"] == side]
        if snapshot["seq"] is not None:
            assert all(f["seq"] > snapshot["seq"] for f in live)
        final[side] = text + "".join(f["text"] for f in live)
    battle = Battle.objects.get(rater=rater)
    from arena.models import Generation

    stored = dict(Generation.objects.filter(turn__battle=battle).values_list("side", "text"))
    assert final == stored  # nothing lost, nothing doubled


def test_first_prompt_starts_the_battle_and_its_turn_in_one_step(rater, contenders, settings, monkeypatch):
    """The state frame, then the turn; the deltas that follow are the new generations' (nothing re-read)."""
    monkeypatch.setattr("workers.dispatch.enqueue", lambda task, *args, **kwargs: None)  # no worker: frames only
    settings.ARENA_PROMPTS_PER_MINUTE = 1

    async def scenario():
        ws = communicator_for(rater)
        await ws.connect()
        await ws.send_json_to({"type": "prompt", "text": "Tell me about tea."})
        started = await until(ws, {"turn", "error"})
        await ws.disconnect()
        refused_ws = communicator_for(rater)
        await refused_ws.connect()
        await refused_ws.send_json_to({"type": "prompt", "text": "And coffee?"})
        refused = await until(refused_ws, {"turn", "error"})
        await refused_ws.disconnect()
        return started, refused

    started, refused = run(scenario())
    assert [f["type"] for f in started] == ["state", "turn"]
    battle = Battle.objects.get(rater=rater)
    assert started[0]["battle"] == battle.public_id.hex and started[0]["turns"] == []
    assert started[1] == {"type": "turn", "index": 1, "prompt": "Tell me about tea."}
    assert battle.turns.count() == 1 and battle.turns.get().generations.count() == 2
    # Over the rate limit, a first prompt is refused before anything is stored: no empty battle is left.
    assert [f["type"] for f in refused] == ["error"] and refused[0]["code"] == "rate_limited"
    assert Battle.objects.filter(rater=rater).count() == 1
