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
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import Future

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

from workers import partials

DEFAULT_BATCH_MS = 40.0
# Share of a batch interval a reader waits after sending a batch (see DeltaPublisher.pace).
READ_PACING = 0.75
SEND_TIMEOUT_S = 10.0
MAX_SENDS_PER_CALL = 100  # sends coalesced into one Redis call (see _Outbox)

_sender_lock = threading.Lock()
_sender: tuple[int, asyncio.AbstractEventLoop, _Outbox] | None = None


def _sender_state() -> tuple[int, asyncio.AbstractEventLoop, _Outbox]:
    """One event loop per process, in its own thread, for every channel-layer send of that process,
    with the outbox that feeds it.

    channels_redis keeps its Redis connections per event loop: ``async_to_sync`` from a worker
    thread makes a new loop, and so a new connection, for every call. Sending through one
    long-lived loop keeps the connections open and costs a tenth of the CPU per batch.
    """
    global _sender
    with _sender_lock:
        if _sender is None or _sender[0] != os.getpid() or _sender[1].is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="channel-sender", daemon=True).start()
            _sender = (os.getpid(), loop, _Outbox(loop))
        return _sender


def _sender_loop() -> asyncio.AbstractEventLoop:
    return _sender_state()[1]


def _outbox() -> _Outbox:
    return _sender_state()[2]


def group_send_nowait(group: str, message: dict, *, record: tuple[str, int, str] | None = None) -> Future | None:
    """Start sending one event to a group from synchronous code; the future ends when it is sent.

    ``record``: (partial name, seq, text), recorded for reconnecting clients (``partials``) before
    the event can reach anyone; on the production layer in the same Redis call as the send.
    None when it is already sent (the embedded default's in-memory layer sends at once).
    """
    layer = get_channel_layer()
    if isinstance(layer, InMemoryChannelLayer):
        # The embedded default: the layer lives in the web process's own loop and needs no connection.
        if record is not None:
            partials.record(*record)
        if _running_loop() is None:
            async_to_sync(layer.group_send)(group, message)
        else:
            # Called from a coroutine on the sender loop (a stream being read there): the in-memory
            # send never waits, so tasks started in order deliver in order.
            asyncio.get_running_loop().create_task(layer.group_send(group, message))
        return None
    if record is not None and not partials.record_by_layer(layer):
        partials.record(*record)
        record = None
    if hasattr(layer, "group_send_many") and layer.one_call_group_send():
        return _outbox().put(layer, group, message, None if record is None else partials.record_args(*record))
    return asyncio.run_coroutine_threadsafe(layer.group_send(group, message), _sender_loop())


class _Outbox:
    """Sends waiting for the sender loop, taken together: the batches of every stream of the
    process that are due at about the same moment go out in one Redis call (the production
    layer's ``group_send_many``), in the order they were handed over.

    A thread hands a send over and gets a future; the loop is woken only when no drain is under
    way, and a drain takes everything that waits (up to ``MAX_SENDS_PER_CALL`` per call).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._waiting: deque = deque()
        self._lock = threading.Lock()
        self._draining = False  # a drain is scheduled or running

    def put(self, layer, group: str, message: dict, record: tuple | None) -> Future:
        future: Future = Future()
        with self._lock:
            self._waiting.append((layer, (group, message, record), future))
            wake, self._draining = not self._draining, True
        if wake:
            self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self._drain()))
        return future

    def _take(self) -> list:
        with self._lock:
            if not self._waiting:
                self._draining = False
                return []
            first = self._waiting[0][0]
            taken = []
            while self._waiting and len(taken) < MAX_SENDS_PER_CALL and self._waiting[0][0] is first:
                taken.append(self._waiting.popleft())
            return taken

    async def _drain(self) -> None:
        while taken := self._take():
            try:
                await taken[0][0].group_send_many([send for _layer, send, _future in taken])
            except BaseException as exc:
                for _layer, _send, future in taken:
                    future.set_exception(exc)
                if not isinstance(exc, Exception):
                    with self._lock:
                        self._draining = False
                    raise
            else:
                for _layer, _send, future in taken:
                    future.set_result(None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class LoopCall:
    """A coroutine run on the process's sender loop for a thread that waits for it.

    Every stream of a worker process is read in that one loop: its threads only start a read and
    wait for the outcome, so they do not compete for the interpreter lock at every token, and the
    thread that takes new tasks from the broker is not held up behind a hundred readers.
    ``cancel`` stops the coroutine and returns once it has finished (its connection closed).
    """

    def __init__(self, make_coroutine: Callable[[], Coroutine]) -> None:
        self.loop = _sender_loop()
        self._outcome: Future = Future()
        self._task: asyncio.Task | None = None
        self.loop.call_soon_threadsafe(self._start, make_coroutine)

    def _start(self, make_coroutine: Callable[[], Coroutine]) -> None:
        try:
            self._task = self.loop.create_task(make_coroutine())
        except BaseException as exc:  # the waiting thread gets it instead of waiting forever
            self._outcome.set_exception(exc)
            return
        self._task.add_done_callback(self._copy)

    def _copy(self, task: asyncio.Task) -> None:
        if task.cancelled():
            self._outcome.cancel()
        elif task.exception() is not None:
            self._outcome.set_exception(task.exception())
        else:
            self._outcome.set_result(task.result())

    def result(self, timeout: float | None = None):
        """The coroutine's result (or its exception); concurrent.futures.TimeoutError if not done yet."""
        return self._outcome.result(timeout)

    def cancel(self, timeout: float = SEND_TIMEOUT_S) -> None:
        # Runs after _start (callbacks run in order), so the task exists by then.
        self.loop.call_soon_threadsafe(lambda: self._task is not None and self._task.cancel())
        try:
            self._outcome.result(timeout)
        except BaseException:  # cancelled (as asked), or it failed or finished first: either way it is over
            pass


def group_send(group: str, message: dict, *, timeout: float = SEND_TIMEOUT_S) -> None:
    """Send one event to a group from synchronous code (worker threads), in order for the caller."""
    future = group_send_nowait(group, message)
    if future is not None:
        future.result(timeout)


class DeltaPublisher:
    """Batches of text for one side, in order, with at most one batch on its way at a time.

    While a batch is being sent the reader goes on reading and the next batch grows: a slow
    channel layer gets fewer, larger messages instead of one message per token, and the
    backend's stream is never held up by it.
    """

    def __init__(self, *, group: str, side: str, interval_ms: float = DEFAULT_BATCH_MS, start_seq: int = 0,
                 partial_name: str | None = None) -> None:
        self.group = group
        self.partial_name = partial_name
        self.side = side
        self.interval_s = interval_ms / 1000.0
        self.seq = start_seq
        self._pending: list[str] = []
        self._last_flush = float("-inf")  # the first text goes out at once: it is the time to first token
        self._in_flight: Future | None = None
        # (group, event, record=None) -> Future | None; subclasses may wrap it to add fields to every event.
        self._send = group_send_nowait

    def add(self, text: str) -> bool:
        """Queue ``text``; True when this call sent a batch (nothing more goes out for an interval)."""
        if text:
            self._pending.append(text)
        if (self._pending and time.monotonic() - self._last_flush >= self.interval_s
                and (self._in_flight is None or self._in_flight.done())):
            self.flush()
            return True
        return False

    def pace(self) -> None:
        """After a batch went out, wait most of an interval before reading the backend again.

        Nothing would be sent before then anyway; meanwhile the tokens gather in the socket, so
        the next read takes several at once: a fifth less CPU per stream at 100 tokens/s, and
        fewer wake-ups competing for the worker's interpreter lock. The first text is not delayed.
        """
        time.sleep(self.interval_s * READ_PACING)

    async def apace(self) -> None:
        """``pace`` for a stream read in an event loop."""
        await asyncio.sleep(self.interval_s * READ_PACING)

    def flush(self) -> None:
        if not self._pending:
            return
        self._wait_sent()
        self.seq += 1
        text = "".join(self._pending)
        self._pending.clear()
        # Recorded before (or as) it is sent: a reconnecting client's snapshot never misses a sent batch.
        record = (self.partial_name, self.seq, text) if self.partial_name else None
        self._in_flight = self._send(self.group, {"type": "generation.delta", "side": self.side, "seq": self.seq,
                                                  "text": text}, record=record)
        self._last_flush = time.monotonic()

    def _wait_sent(self) -> None:
        if self._in_flight is not None:
            future, self._in_flight = self._in_flight, None
            future.result(SEND_TIMEOUT_S)

    def drain(self) -> None:
        """Send what is pending and return once every batch so far is sent."""
        self.flush()
        self._wait_sent()

    def final(self, event: dict) -> None:
        """Send what is pending, then ``event``, and return once both are sent."""
        self.drain()
        self._in_flight = self._send(self.group, {"side": self.side, "seq": self.seq, **event})
        self._wait_sent()

    def finish(self, **fields) -> None:
        self.final({"type": "generation.done", **fields})

    def fail(self, *, message: str) -> None:
        self.final({"type": "generation.failed", "message": message})
