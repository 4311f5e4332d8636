"""Shared pieces of the protocol handlers: server state, pacing, JSON encoding, fault plumbing."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .config import SERVER_FAULTS, STREAM_FAULTS, EmulatedModel, Fault
from .http import Connection, Request


class LoggedRequest(tuple):
    """``(method, path, body)``, with the request headers on ``.headers`` for tests that need them.

    ``body`` is the parsed JSON body, or None when there was none or it was not JSON.
    """

    def __new__(cls, method: str, path: str, body, headers: dict[str, str]):
        entry = super().__new__(cls, (method, path, body))
        entry.headers = dict(headers)
        return entry

    @property
    def method(self) -> str:
        return self[0]

    @property
    def path(self) -> str:
        return self[1]

    @property
    def body(self):
        return self[2]


@dataclass
class State:
    """What the protocol handlers share; owned by :class:`~workers.emulator.server.EmulatorServer`."""

    models: dict[str, EmulatedModel]
    api_key: str | None
    faults: dict[str, Fault | None] = field(default_factory=dict)
    # Ollama keeps models loaded between requests; the first request pays ``load_ms``.
    loaded: dict[str, float] = field(default_factory=dict)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started_at: float = field(default_factory=time.time)

    def fault_for(self, name: str) -> Fault | None:
        with self.lock:
            return self.faults.get(name)

    def count(self, model: str, what: str) -> None:
        with self.lock:
            bucket = self.counters.setdefault(model, {})
            bucket[what] = bucket.get(what, 0) + 1


def dumps(obj) -> bytes:
    """Compact JSON with raw UTF-8, as serde_json and Python servers write it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def dumps_go(obj) -> bytes:
    """Compact JSON as Go's encoding/json writes it: <, > and & escaped (they only occur in strings)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode("utf-8")


def parse_json(body: bytes):
    """The parsed body, or raise ``ValueError`` (json.JSONDecodeError or a UTF-8 error)."""
    return json.loads(body.decode("utf-8"))


def bearer_ok(request: Request, api_key: str | None, *, ignore_case: bool = False) -> bool:
    if not api_key:
        return True
    expected = f"Bearer {api_key}"
    given = request.header("authorization")
    return given.lower() == expected.lower() if ignore_case else given == expected


class Pacer:
    """When each token is due: ``ttft`` after the start for the first, then one per 1/rate."""

    def __init__(self, model: EmulatedModel, start: float | None = None, extra_delay_s: float = 0.0) -> None:
        self.start = time.perf_counter() if start is None else start
        self.first = model.ttft_ms / 1000.0 + extra_delay_s
        self.gap = 1.0 / model.tokens_per_second

    def due(self, index: int) -> float:
        return self.start + self.first + index * self.gap

    async def wait(self, index: int) -> None:
        delay = self.due(index) - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)


async def apply_server_fault(state: State, model_name: str, conn: Connection) -> bool:
    """Apply ``refuse`` / ``slow_headers``. True means the connection is gone: stop handling."""
    fault = state.fault_for(model_name)
    if fault is None or fault.kind not in SERVER_FAULTS:
        return False
    if fault.kind == "refuse":
        conn.reset()
        return True
    await asyncio.sleep(fault.delay_ms / 1000.0)
    return False


def stream_fault(state: State, model_name: str) -> Fault | None:
    fault = state.fault_for(model_name)
    return fault if fault is not None and fault.kind in STREAM_FAULTS else None


def strike_index(fault: Fault | None, token_count: int) -> int | None:
    """Before which token a stream fault strikes; always before the last, so it always shows."""
    if fault is None or token_count == 0:
        return None
    return min(fault.after_tokens, token_count - 1)


async def strike(conn: Connection, fault: Fault, *, send_error: Callable[[], Awaitable[None]],
                 send_malformed: Callable[[], Awaitable[None]]) -> None:
    """Carry out a stream fault on an open streaming response."""
    if fault.kind == "error_mid_stream":
        await send_error()
        await conn.end()
    elif fault.kind == "malformed_line":
        await send_malformed()
        await conn.end()
    else:  # stall
        await conn.wait_for_client_close(fault.delay_ms / 1000.0 if fault.delay_ms else None)
        conn.drop()


async def stall_without_response(conn: Connection, fault: Fault) -> None:
    """A stall on a non-streaming request: no status line at all, then drop."""
    await conn.wait_for_client_close(fault.delay_ms / 1000.0 if fault.delay_ms else None)
    conn.drop()


def rfc3339_now() -> str:
    """UTC time with nanoseconds, trailing zeros trimmed, as Go's RFC3339Nano prints it."""
    ns = time.time_ns()
    seconds, fraction = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{fraction:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


def rfc3339(timestamp: float) -> str:
    seconds = int(timestamp)
    micros = int((timestamp - seconds) * 1_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{base}.{micros:06d}Z"
