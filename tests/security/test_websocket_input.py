"""Hostile input on the battle WebSocket: each bad frame gets an error frame and writes nothing.

Everything goes through ``arena.asgi.application`` with a real session, so what is tested is what a
browser (or a script with a stolen-looking cookie) meets.
"""
from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from arena.models import Battle, BattleStatus, Generation, GenerationStatus, Turn, Vote
from tests.security.conftest import make_user, session_cookie, ws

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("require_postgres", "require_redis")]


def row_counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in (Battle, Turn, Generation, Vote)}


@pytest.fixture
def rater(django_user_model):
    return make_user(django_user_model, "rater")


@pytest.fixture
def pair(make_contender):
    return make_contender("test-quick-1b", "tgi"), make_contender("demo-terse-7b", "tgi")


def finished_battle(rater, pair, *, prompt="What is tea?") -> Battle:
    """A battle whose only turn has both answers done: ready for a vote."""
    battle = Battle.objects.create(public_id=uuid.uuid4(), rater=rater, model_a=pair[0], model_b=pair[1])
    turn = Turn.objects.create(battle=battle, index=1, prompt=prompt)
    for side, contender in (("a", pair[0]), ("b", pair[1])):
        Generation.objects.create(turn=turn, side=side, contender=contender, status=GenerationStatus.DONE,
                                  text=f"answer {side}", finished_at=timezone.now())
    return battle


async def open_socket(cookie: str, path: str = "/ws/battle/"):
    communicator = ws(path, cookie=cookie)
    connected, code = await communicator.connect(timeout=10)
    assert connected, code
    return communicator


async def exchange(communicator, *, text: str | None = None, data: bytes | None = None) -> dict:
    # send_input, not send_to: send_to cannot send an empty text frame.
    frame = {"type": "websocket.receive"}
    frame.update({"bytes": data} if data is not None else {"text": text})
    await communicator.send_input(frame)
    return await communicator.receive_json_from(timeout=10)


FRAME_ERROR = "Frames must be JSON text under 64 KB."
MALFORMED = {"type": "error", "message": "Unknown or malformed frame."}


def prompt(text) -> str:
    return json.dumps({"type": "prompt", "text": text})


# (what is sent, the error frame expected back); for each, nothing may be written.
BAD_FRAMES = [
    ("x" * 70_000, {"type": "error", "message": FRAME_ERROR}),
    (prompt("y" * 64_000), {"type": "error", "message": FRAME_ERROR}),  # the frame, not just the prompt, is too big
    (b"\x00\x01\xffbinary", {"type": "error", "message": FRAME_ERROR}),
    (prompt("hi").encode(), {"type": "error", "message": FRAME_ERROR}),  # even valid JSON, if sent as binary
    ("", {"type": "error", "message": FRAME_ERROR}),
    ("{", MALFORMED),
    ('{"type": "prompt", "text": "hi"', MALFORMED),
    ("\x00", MALFORMED),
    ("null", MALFORMED),
    ("[]", MALFORMED),
    ('"prompt"', MALFORMED),
    ("42", MALFORMED),
    ('{"text": "no type"}', MALFORMED),
    ('{"type": "PROMPT", "text": "hi"}', MALFORMED),
    ('{"type": ["prompt"], "text": "hi"}', MALFORMED),
    ('{"type": {"prompt": 1}, "text": "hi"}', MALFORMED),
    ('{"type": 1}', MALFORMED),
    (prompt(""), {"type": "error", "code": "empty_prompt", "message": "Type a prompt first."}),
    (prompt("  \n\t \u3000"), {"type": "error", "code": "empty_prompt", "message": "Type a prompt first."}),
    (json.dumps({"type": "prompt"}), {"type": "error", "code": "empty_prompt", "message": "Type a prompt first."}),
    (prompt(None), {"type": "error", "code": "empty_prompt", "message": "Type a prompt first."}),
    (prompt(["a list"]), {"type": "error", "code": "empty_prompt", "message": "Type a prompt first."}),
    (prompt({"text": "nested"}), {"type": "error", "code": "empty_prompt", "message": "Type a prompt first."}),
    (prompt("z" * (settings.ARENA_MAX_PROMPT_CHARS + 1)), {
        "type": "error", "code": "prompt_too_long",
        "message": f"The prompt is {settings.ARENA_MAX_PROMPT_CHARS + 1} characters; "
                   f"the limit is {settings.ARENA_MAX_PROMPT_CHARS}."}),
    # PostgreSQL cannot store NUL in text, and a lone surrogate cannot be encoded at all: refused up
    # front, before a battle row exists (they used to crash the consumer after writing one).
    (prompt("hello\x00world"), {"type": "error", "code": "bad_characters",
                                "message": "The prompt contains a NUL character; remove it and send it again."}),
    (prompt("\x00"), {"type": "error", "code": "bad_characters",
                      "message": "The prompt contains a NUL character; remove it and send it again."}),
    ('{"type": "prompt", "text": "half a pair \\ud800 here"}', {
        "type": "error", "code": "bad_characters",
        "message": "The prompt contains a broken character; remove it and send it again."}),
]


def test_each_bad_frame_gets_an_error_and_writes_nothing(rater, pair):
    cookie = session_cookie(rater)
    before = row_counts()

    async def scenario():
        communicator = await open_socket(cookie)
        replies = []
        for sent, _expected in BAD_FRAMES:
            if isinstance(sent, bytes):
                replies.append(await exchange(communicator, data=sent))
            else:
                replies.append(await exchange(communicator, text=sent))
        # Still the same, working connection: a bad frame never costs the rater the socket.
        await communicator.send_json_to({"type": "vote", "winner": "model_a"})
        replies.append(await communicator.receive_json_from(timeout=10))
        await communicator.disconnect()
        return replies

    replies = asyncio.run(scenario())
    for (sent, expected), reply in zip(BAD_FRAMES, replies):
        assert reply == expected, (sent[:80], reply)
    assert replies[-1]["code"] == "no_battle"
    assert row_counts() == before


def test_control_and_bidi_characters_are_kept_verbatim(rater, pair):
    """The project keeps such characters (a prompt is the rater's text, stored and sent on as typed).

    They are safe to keep: pages show prompts with textContent or autoescaping, never as markup, and
    the backend gets them JSON-encoded. Only what cannot be stored (NUL, lone surrogates) is refused.
    """
    cookie = session_cookie(rater)
    text = "abc\u202edef\u2066\u200f \x07\x1b[31mred\x1b[0m \r\n\ttab \ufeff\u200b end"

    async def scenario():
        communicator = await open_socket(cookie)
        await communicator.send_to(text_data=prompt(text))
        frames = []
        while not frames or frames[-1]["type"] != "turn":
            frames.append(await communicator.receive_json_from(timeout=10))
        await communicator.disconnect()
        return frames

    frames = asyncio.run(scenario())
    assert frames[-1] == {"type": "turn", "index": 1, "prompt": text}
    assert Turn.objects.get(battle__rater=rater).prompt == text


def test_replayed_and_forged_votes_change_nothing(rater, pair, django_user_model):
    other = make_user(django_user_model, "rater", "-other")
    mine, theirs = finished_battle(rater, pair), finished_battle(other, pair, prompt="their prompt")
    unfinished = Battle.objects.create(public_id=uuid.uuid4(), rater=rater, model_a=pair[0], model_b=pair[1])
    Turn.objects.create(battle=unfinished, index=1, prompt="still running")
    cookie = session_cookie(rater)
    counts_at_start = row_counts()

    forged_ids = [theirs.public_id.hex, str(theirs.public_id), str(theirs.public_id).upper(),
                  "{" + str(theirs.public_id) + "}", str(uuid.uuid4()), "not-a-uuid", "../../admin", 12345, None,
                  {"battle": theirs.public_id.hex}, [theirs.public_id.hex], ""]
    bad_winners = ["model_c", "MODEL_A", "model_a ", "", None, 1, True, ["model_a"], {"winner": "model_a"},
                   "tie (bothbad) ", "a"]

    async def scenario():
        got = {}
        communicator = await open_socket(cookie)
        # No battle on this socket yet: a vote goes nowhere.
        got["no battle"] = await exchange(communicator, text=json.dumps({"type": "vote", "winner": "model_a"}))
        # Someone else's battle, by any spelling of its id, looks like no battle at all.
        got["forged"] = []
        for battle_id in forged_ids:
            got["forged"].append(await exchange(communicator, text=json.dumps({"type": "resume",
                                                                               "battle": battle_id})))
        got["after forged"] = await exchange(communicator, text=json.dumps({"type": "vote", "winner": "model_a"}))
        # An unfinished battle of one's own cannot be voted on yet.
        resumed = await exchange(communicator, text=json.dumps({"type": "resume", "battle": unfinished.public_id.hex}))
        assert resumed["type"] == "state"
        got["unfinished"] = await exchange(communicator, text=json.dumps({"type": "vote", "winner": "model_a"}))
        # Now the rater's own finished battle.
        assert (await exchange(communicator, text=json.dumps({"type": "resume",
                                                                "battle": mine.public_id.hex})))["type"] == "state"
        got["bad winners"] = []
        for winner in bad_winners:
            got["bad winners"].append(await exchange(communicator, text=json.dumps({"type": "vote",
                                                                                    "winner": winner})))
        got["counts after bad"] = await database_sync_to_async(row_counts)()
        # Extra fields that name the other battle, a contender or another rater are ignored: the vote
        # can only ever land on the battle this socket follows, for the pair that battle was dealt.
        got["extra fields"] = await exchange(communicator, text=json.dumps({
            "type": "vote", "winner": "model_a", "battle": theirs.public_id.hex, "model_a": pair[1].pk,
            "model_b": pair[0].pk, "contender": pair[1].display_name, "rater": other.pk, "side": "b"}))
        got["replay same"] = await exchange(communicator, text=json.dumps({"type": "vote", "winner": "model_a"}))
        got["replay other"] = await exchange(communicator, text=json.dumps({"type": "vote", "winner": "model_b"}))
        await communicator.disconnect()
        return got

    got = asyncio.run(scenario())
    assert got["no battle"]["code"] == "no_battle"
    assert got["forged"] == [{"type": "error", "code": "not_found", "message": "No such battle."}] * len(forged_ids)
    assert got["after forged"]["code"] == "no_battle"
    assert got["unfinished"]["code"] == "not_finished"
    for winner, reply in zip(bad_winners, got["bad winners"]):
        assert reply["type"] == "error" and reply["code"] == "bad_vote", (winner, reply)
    assert got["counts after bad"] == counts_at_start

    reveal = got["extra fields"]
    assert reveal["type"] == "reveal" and reveal["winner"] == "model_a"
    assert reveal["sides"]["a"]["name"] == pair[0].display_name and reveal["sides"]["b"]["name"] == pair[1].display_name
    for replay in (got["replay same"], got["replay other"]):
        assert replay == {"type": "error", "code": "already_voted", "message": "This battle already has a vote."}
    vote = Vote.objects.get()
    assert (vote.battle_id, vote.rater_id, vote.winner) == (mine.pk, rater.pk, "model_a")
    theirs.refresh_from_db()
    assert theirs.status == BattleStatus.ACTIVE and theirs.revealed_at is None
    assert row_counts() == {**counts_at_start, "Vote": counts_at_start["Vote"] + 1}


def test_two_tabs_voting_at_once_store_one_vote(rater, pair):
    battle = finished_battle(rater, pair)
    cookie = session_cookie(rater)

    async def tab(winner: str) -> dict:
        communicator = await open_socket(cookie)
        assert (await exchange(communicator, text=json.dumps({"type": "resume",
                                                                "battle": battle.public_id.hex})))["type"] == "state"
        reply = await exchange(communicator, text=json.dumps({"type": "vote", "winner": winner}))
        await communicator.disconnect()
        return reply

    async def scenario():
        return await asyncio.gather(*(tab(winner) for winner in ("model_a", "model_b", "tie", "tie (bothbad)")))

    replies = asyncio.run(scenario())
    kinds = sorted(reply["type"] for reply in replies)
    assert kinds == ["error", "error", "error", "reveal"], replies
    assert all(r["code"] == "already_voted" for r in replies if r["type"] == "error")
    winner = next(r["winner"] for r in replies if r["type"] == "reveal")
    assert list(Vote.objects.values_list("winner", flat=True)) == [winner]


def test_named_socket_refuses_bad_model_picks(role_users, pair):
    from arena.models import ArenaModel

    disabled = ArenaModel.objects.create(display_name="switched off", server=pair[0].server,
                                         backend_model_id="another-model", preset=pair[0].preset,
                                         enabled=False)
    cookie = session_cookie(role_users["viewer"])
    picks = [({}, "pick_models"), ({"model_a": pair[0].pk}, "pick_models"),
             ({"model_a": str(pair[0].pk), "model_b": str(pair[1].pk)}, "pick_models"),
             ({"model_a": True, "model_b": pair[1].pk}, "pick_models"),
             ({"model_a": float(pair[0].pk), "model_b": pair[1].pk}, "pick_models"),
             ({"model_a": pair[0].pk, "model_b": pair[0].pk}, "same_model"),
             ({"model_a": pair[0].pk, "model_b": disabled.pk}, "unknown_model"),
             ({"model_a": pair[0].pk, "model_b": 10**12}, "unknown_model"),
             ({"model_a": -1, "model_b": pair[1].pk}, "unknown_model")]
    before = row_counts()

    async def scenario():
        communicator = await open_socket(cookie, "/ws/battle/named/")
        replies = [await exchange(communicator, text=json.dumps({"type": "new", **fields})) for fields, _ in picks]
        # A prompt before picking starts nothing either.
        replies.append(await exchange(communicator, text=prompt("hello")))
        await communicator.disconnect()
        return replies

    replies = asyncio.run(scenario())
    for (fields, code), reply in zip(picks, replies):
        assert reply["type"] == "error" and reply["code"] == code, (fields, reply)
    assert replies[-1]["code"] == "pick_models"
    assert row_counts() == before


def test_preview_socket_refuses_bad_previews(role_users, pair):
    cookie = session_cookie(role_users["admin"])
    limit = 4000
    frames = [
        ({"type": "battle"}, 'Expected {"type": "preview", "contender": id, "prompt": text}.'),
        (["preview"], 'Expected {"type": "preview", "contender": id, "prompt": text}.'),
        ({"type": "preview", "contender": pair[0].pk, "prompt": ""}, f"The prompt must be 1 to {limit} characters."),
        ({"type": "preview", "contender": pair[0].pk, "prompt": "   "}, f"The prompt must be 1 to {limit} characters."),
        ({"type": "preview", "contender": pair[0].pk, "prompt": 7}, f"The prompt must be 1 to {limit} characters."),
        ({"type": "preview", "contender": pair[0].pk, "prompt": "p" * (limit + 1)},
         f"The prompt must be 1 to {limit} characters."),
        ({"type": "preview", "contender": str(pair[0].pk), "prompt": "hi"}, "No such contender."),
        ({"type": "preview", "contender": 10**12, "prompt": "hi"}, "No such contender."),
        ({"type": "preview", "contender": None, "prompt": "hi"}, "No such contender."),
    ]
    before = row_counts()

    async def scenario():
        communicator = await open_socket(cookie, "/ws/admin/preview/")
        replies = [await exchange(communicator, text=json.dumps(frame)) for frame, _ in frames]
        await communicator.disconnect()
        return replies

    replies = asyncio.run(scenario())
    for (frame, message), reply in zip(frames, replies):
        assert reply == {"type": "error", "message": message}, frame
    assert row_counts() == before
