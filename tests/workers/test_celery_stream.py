"""A real Celery worker process streams a generation to a consumer through Redis, in order."""
from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from arena.consumers import ContenderPreviewConsumer
from arena.models import ArenaModel, BackendServer, DecodingPreset, HealthStatus

pytestmark = [pytest.mark.django_db(transaction=True)]


def make_contender(emulator, kind: str, model: str, max_new_tokens: int = 64) -> ArenaModel:
    preset = DecodingPreset.objects.create(name=f"p-{kind}-{model}", temperature=0.7, max_new_tokens=max_new_tokens,
                                           seed=3)
    server = BackendServer.objects.create(name=f"s-{kind}-{model}", kind=kind, base_url=emulator.url_for(kind, model),
                                          health_status=HealthStatus.UP, stall_timeout_s=5, deadline_s=30)
    return ArenaModel.objects.create(display_name=f"{model}-{kind}", server=server,
                                     backend_model_id="tgi" if kind == "tgi" else model, preset=preset, enabled=True)


async def collect(communicator: WebsocketCommunicator, timeout: float = 30.0) -> list[dict]:
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] in {"done", "failed", "error"}:
            return frames


@pytest.mark.parametrize("kind", ["tgi", "ollama", "openai"])
def test_worker_process_streams_ordered_deltas_through_redis(kind, emulator, celery_worker_process, settings,
                                                             django_user_model):
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "arena.channel_layer.ArenaRedisChannelLayer"
    assert settings.GENERATION_IN_PROCESS is False
    contender = make_contender(emulator, kind, "demo-markdown-13b")
    staff = django_user_model.objects.create_user("staff", password="pw-staff-123", is_staff=True)

    async def scenario():
        communicator = WebsocketCommunicator(ContenderPreviewConsumer.as_asgi(), "/ws/admin/preview/")
        communicator.scope["user"] = staff
        connected, _ = await communicator.connect()
        assert connected
        await communicator.send_json_to({"type": "preview", "contender": contender.pk, "prompt": "Tell me about tea."})
        assert (await communicator.receive_json_from(timeout=5))["type"] == "started"
        frames = await collect(communicator)
        await communicator.disconnect()
        return frames

    frames = asyncio.run(scenario())
    deltas = [f for f in frames if f["type"] == "delta"]
    assert frames[-1]["type"] == "done", frames[-1]
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert all(d["side"] == "a" for d in deltas)
    assert frames[-1]["seq"] == len(deltas)
    # Batching: fewer frames than tokens, yet the same text as a direct read of the model.
    text = "".join(d["text"] for d in deltas)
    assert text.strip()
    assert len(deltas) < frames[-1]["output_tokens"]
    assert text == direct_text(contender)


def direct_text(contender: ArenaModel) -> str:
    from workers.backends import Delta, Message, get_adapter

    items = get_adapter(contender.server.kind).stream(
        contender.endpoint(), [Message("user", "Tell me about tea.")], contender.preset.params()
    )
    return "".join(item.text for item in items if isinstance(item, Delta))


def test_failed_generation_reaches_the_consumer_as_a_plain_message(emulator, celery_worker_process,
                                                                    django_user_model):
    from workers.emulator import Fault

    contender = make_contender(emulator, "ollama", "fault-target")
    emulator.set_fault("fault-target", Fault(kind="error_mid_stream", after_tokens=3))
    staff = django_user_model.objects.create_user("staff", password="pw-staff-123", is_staff=True)

    async def scenario():
        communicator = WebsocketCommunicator(ContenderPreviewConsumer.as_asgi(), "/ws/admin/preview/")
        communicator.scope["user"] = staff
        await communicator.connect()
        await communicator.send_json_to({"type": "preview", "contender": contender.pk, "prompt": "hi"})
        frames = await collect(communicator)
        await communicator.disconnect()
        return frames

    frames = asyncio.run(scenario())
    assert frames[-1]["type"] == "failed"
    assert frames[-1]["message"] == "The model could not answer."


def test_preview_refuses_non_staff_and_bad_frames(db, django_user_model):
    rater = django_user_model.objects.create_user("r", password="pw-r-123456")
    staff = django_user_model.objects.create_user("s", password="pw-s-123456", is_staff=True)

    async def scenario():
        refused = WebsocketCommunicator(ContenderPreviewConsumer.as_asgi(), "/ws/admin/preview/")
        refused.scope["user"] = rater
        connected, code = await refused.connect()
        assert not connected and code == 4403

        communicator = WebsocketCommunicator(ContenderPreviewConsumer.as_asgi(), "/ws/admin/preview/")
        communicator.scope["user"] = staff
        assert (await communicator.connect())[0]
        replies = []
        for frame in ({"type": "nope"}, {"type": "preview", "contender": 1, "prompt": ""},
                      {"type": "preview", "contender": 999999, "prompt": "hi"}):
            await communicator.send_json_to(frame)
            replies.append(await communicator.receive_json_from(timeout=5))
        # Frames that are not JSON text get an error too, and the socket stays open.
        for raw in ({"bytes": b"\x00\x01"}, {"text": "{not json"}, {"text": ""}):
            await communicator.send_input({"type": "websocket.receive", **raw})
            replies.append(await communicator.receive_json_from(timeout=5))
        await communicator.send_json_to({"type": "nope"})
        replies.append(await communicator.receive_json_from(timeout=5))
        await communicator.disconnect()
        return replies

    replies = asyncio.run(scenario())
    assert [r["type"] for r in replies] == ["error"] * 7
    assert replies[3]["message"] == replies[5]["message"] == "Frames must be JSON text under 64 KB."
    assert "Expected" in replies[4]["message"] and "Expected" in replies[6]["message"]
    assert "Expected" in replies[0]["message"]
    assert "1 to" in replies[1]["message"]
    assert replies[2]["message"] == "No such contender."
