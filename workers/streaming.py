"""Publish a generation's text to a channel-layer group as ordered, batched deltas.

Deltas are batched (every ``interval_ms``, not per token) so that a fast model does not flood the
channel layer; each batch carries the side and a sequence number so the receiver can detect loss
or reordering.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

from workers import partials

DEFAULT_BATCH_MS = 40.0
SEND_TIMEOUT_S = 10.0

_sender_lock = threading.Lock()
_sender: tuple[int, asyncio.AbstractEventLoop] | None = None


def _sender_loop() -> asyncio.AbstractEventLoop:
    """One event loop per process, in its own thread, for every channel-layer send of that process.

    channels_redis keeps its Redis connections per event loop: ``async_to_sync`` from a worker
    thread makes a new loop, and so a new connection, for every call. Sending through one
    long-lived loop keeps the connections open and costs a tenth of the CPU per batch.
    """
    global _sender
    with _sender_lock:
        if _sender is None or _sender[0] != os.getpid() or _sender[1].is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="channel-sender", daemon=True).start()
            _sender = (os.getpid(), loop)
        return _sender[1]


def group_send(group: str, message: dict, *, timeout: float = SEND_TIMEOUT_S) -> None:
    """Send one event to a group from synchronous code (worker threads), in order for the caller."""
    layer = get_channel_layer()
    if isinstance(layer, InMemoryChannelLayer):
        # The embedded default: the layer lives in the web process's own loop and needs no connection.
        async_to_sync(layer.group_send)(group, message)
        return
    asyncio.run_coroutine_threadsafe(layer.group_send(group, message), _sender_loop()).result(timeout)


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
        self._send = group_send

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
