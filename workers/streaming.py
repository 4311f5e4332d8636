"""Publish a generation's text to a channel-layer group as ordered, batched deltas.

Deltas are batched (every ``interval_ms``, not per token) so that a fast model does not flood the
channel layer; each batch carries the side and a sequence number so the receiver can detect loss
or reordering.
"""
from __future__ import annotations

import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from workers import partials

DEFAULT_BATCH_MS = 40.0


class DeltaPublisher:
    def __init__(self, *, group: str, side: str, interval_ms: float = DEFAULT_BATCH_MS, start_seq: int = 0,
                 partial_name: str | None = None) -> None:
        self.group = group
        self.partial_name = partial_name
        self.side = side
        self.interval_s = interval_ms / 1000.0
        self.seq = start_seq
        self._pending: list[str] = []
        self._last_flush = time.monotonic()
        self._layer = get_channel_layer()
        self._send = async_to_sync(self._layer.group_send)

    def add(self, text: str) -> None:
        if text:
            self._pending.append(text)
        if self._pending and time.monotonic() - self._last_flush >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        self.seq += 1
        text = "".join(self._pending)
        self._pending.clear()
        if self.partial_name:
            # Recorded before sending: a reconnecting client's snapshot never misses a sent batch.
            partials.record(self.partial_name, self.seq, text)
        self._send(self.group, {"type": "generation.delta", "side": self.side, "seq": self.seq, "text": text})

    def finish(self, **fields) -> None:
        self.flush()
        self._send(self.group, {"type": "generation.done", "side": self.side, "seq": self.seq, **fields})

    def fail(self, *, message: str) -> None:
        self.flush()
        self._send(self.group, {"type": "generation.failed", "side": self.side, "seq": self.seq, "message": message})
