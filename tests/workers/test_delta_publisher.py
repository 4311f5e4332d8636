"""The delta publisher's batching, and the text-so-far record a reconnecting client reads."""
from __future__ import annotations

import uuid

import pytest

from workers import partials
from workers.streaming import DeltaPublisher


class Recorder(DeltaPublisher):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sent: list[dict] = []
        self.records: list[tuple] = []
        self._send = self.keep

    def keep(self, group, event, record=None) -> None:
        self.sent.append(event)
        if record is not None:
            self.records.append(record)


def test_the_first_text_goes_out_at_once_then_batches_wait_for_the_interval():
    publisher = Recorder(group="g", side="a", interval_ms=10_000)
    publisher.add("Hel")
    assert [e["text"] for e in publisher.sent] == ["Hel"]  # the time to first token is not held back
    publisher.add("lo")
    publisher.add(", world")
    assert len(publisher.sent) == 1  # within the interval: batched
    publisher.finish()
    assert [(e["type"], e["seq"], e.get("text")) for e in publisher.sent] == [
        ("generation.delta", 1, "Hel"), ("generation.delta", 2, "lo, world"), ("generation.done", 2, None)]


def test_each_batch_is_recorded_with_its_send_and_nothing_else_is():
    publisher = Recorder(group="g", side="a", interval_ms=0, partial_name="generation-5")
    publisher.add("Hel")
    publisher.add("lo")
    publisher.finish()
    assert publisher.records == [("generation-5", 1, "Hel"), ("generation-5", 2, "lo")]
    assert Recorder(group="g", side="b", interval_ms=0).records == []  # no name: nothing recorded


@pytest.mark.parametrize("backend", ["redis", "local"])
def test_partial_record_keeps_the_sequence_and_the_whole_text_so_far(backend, settings, require_redis):
    if backend == "local":
        settings.REDIS_URL = ""
    name = f"test:{uuid.uuid4().hex}"
    try:
        assert partials.snapshot(name) == (0, "")
        partials.record(name, 1, "Hello")
        partials.record(name, 2, ", wörld")
        assert partials.snapshot(name) == (2, "Hello, wörld")
    finally:
        partials.forget(name)
    assert partials.snapshot(name) == (0, "")


def test_a_batch_sent_on_the_production_layer_is_recorded_in_the_same_call(settings, require_redis):
    """One Redis call per batch: the record a reconnecting client reads and the message itself."""
    import asyncio

    from channels.layers import get_channel_layer

    from workers.streaming import group_send_nowait

    layer = get_channel_layer()
    assert partials.record_by_layer(layer)
    name, group = f"test:{uuid.uuid4().hex}", f"battle.{uuid.uuid4().hex}"

    async def member() -> str:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        return channel

    channel = asyncio.run(member())
    calls = []
    original = layer._one_call_send

    async def counted(*args, **kwargs):
        calls.append(args[2])  # the record's keys
        return await original(*args, **kwargs)

    layer._one_call_send = counted
    try:
        group_send_nowait(group, {"type": "generation.delta", "seq": 1, "text": "Hi"}, record=(name, 1, "Hi")).result(5)
        group_send_nowait(group, {"type": "generation.delta", "seq": 2, "text": " there"},
                          record=(name, 2, " there")).result(5)
        assert partials.snapshot(name) == (2, "Hi there")
        assert calls == [[f"arena:partial:{name}:seq", f"arena:partial:{name}:text"]] * 2
    finally:
        del layer._one_call_send
        partials.forget(name)

    async def receive_two() -> list:
        return [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(2)]

    assert [m["text"] for m in asyncio.run(receive_two())] == ["Hi", " there"]
