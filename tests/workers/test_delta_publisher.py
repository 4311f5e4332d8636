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
        self._send = lambda group, event: self.sent.append(event)


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
