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


def test_batches_go_out_on_the_production_layer_recorded_in_the_same_call_and_coalesced(settings,
                                                                                         require_redis):
    """One Redis call carries a batch and its record; batches of many streams due at once share calls."""
    import asyncio
    import threading

    from channels.layers import get_channel_layer

    from workers.streaming import group_send_nowait

    layer = get_channel_layer()
    assert partials.record_by_layer(layer)
    streams = 20
    names = [f"test:{uuid.uuid4().hex}" for _ in range(streams)]
    groups = [f"battle.{uuid.uuid4().hex}" for _ in range(streams)]

    async def members() -> list[str]:
        channels = []
        for group in groups:
            channels.append(await layer.new_channel())
            await layer.group_add(group, channels[-1])
        return channels

    channels = asyncio.run(members())
    calls: list[int] = []
    original = layer.group_send_many

    async def counted(sends):
        calls.append(len(sends))
        return await original(sends)

    layer.group_send_many = counted
    start = threading.Barrier(streams)

    def stream(k: int) -> None:
        start.wait()
        for seq, text in enumerate(["Hi", " there", "!"], 1):  # one batch in flight per stream, as a publisher
            group_send_nowait(groups[k], {"type": "generation.delta", "seq": seq, "text": text},
                              record=(names[k], seq, text)).result(10)

    threads = [threading.Thread(target=stream, args=(k,)) for k in range(streams)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert [partials.snapshot(name) for name in names] == [(3, "Hi there!")] * streams
    finally:
        del layer.group_send_many
        for name in names:
            partials.forget(name)
    assert sum(calls) == 3 * streams
    assert len(calls) < 3 * streams  # some calls carried several streams' batches

    async def receive_all() -> list[list[str]]:
        return [[(await asyncio.wait_for(layer.receive(c), 5))["text"] for _ in range(3)] for c in channels]

    assert asyncio.run(receive_all()) == [["Hi", " there", "!"]] * streams
