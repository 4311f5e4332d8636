"""A small HTTP/1.1 server on asyncio streams.

Written by hand rather than with a web framework so that every byte on the wire is ours: header
names in each real server's casing, chunked framing flushed event by event, a connection reset
with no response at all, or a response that stops half-way.
"""
from __future__ import annotations

import asyncio
import socket
import struct
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import unquote

MAX_HEAD_BYTES = 64 * 1024
# TGI's default --payload-limit; plenty for the other servers too.
MAX_BODY_BYTES = 2_000_000


class ClientGone(Exception):
    """The client closed the connection while we were still answering."""


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: str
    version: str
    headers: dict[str, str]
    body: bytes
    received_at: float = field(default_factory=time.perf_counter)

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    @property
    def media_type(self) -> str:
        return self.header("content-type").split(";", 1)[0].strip().lower()

    @property
    def wants_close(self) -> bool:
        connection = self.header("connection").lower()
        return (self.version == "HTTP/1.0" and "keep-alive" not in connection) or "close" in connection


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None = None) -> Request | None:
    """The next request on the connection, or None when the client closed it cleanly.

    ``writer`` is used only to answer ``Expect: 100-continue`` (curl sends it for larger bodies).
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise BadRequest(400, "incomplete request head") from exc
    except asyncio.LimitOverrunError as exc:
        raise BadRequest(431, "request head too large") from exc
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError as exc:
        raise BadRequest(400, "malformed request line") from exc
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(400, "malformed header line")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    body = b""
    if writer is not None and headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await read_chunked(reader)
    elif headers.get("content-length"):
        try:
            length = int(headers["content-length"])
        except ValueError as exc:
            raise BadRequest(400, "bad content-length") from exc
        if length > MAX_BODY_BYTES:
            raise BadRequest(413, "Payload Too Large")
        body = await reader.readexactly(length)
    raw_path, _, query = target.partition("?")
    return Request(method=method.upper(), target=target, path=unquote(raw_path), query=query,
                   version=version.strip(), headers=headers, body=body)


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            # Trailers, if any, end with an empty line.
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        total += size
        if total > MAX_BODY_BYTES:
            raise BadRequest(413, "Payload Too Large")
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def canonical_name(name: str) -> str:
    return "-".join(part[:1].upper() + part[1:] for part in name.split("-"))


class Connection:
    """Writes one response at a time to a client connection.

    ``canonical`` header casing (``Content-Type``) is what Go's net/http sends (Ollama); hyper
    (TGI) and uvicorn (vLLM) send lower-case names.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.keep_alive = True
        self.headers_sent = False
        self.head_only = False
        self._chunked = False

    def begin(self, request: Request) -> None:
        self.headers_sent = False
        self._chunked = False
        self.head_only = request.method == "HEAD"
        self.keep_alive = not request.wants_close

    async def _write(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise ClientGone()
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ClientGone() from exc

    def _head(self, status: int, headers: list[tuple[str, str]], canonical: bool,
              extra: list[tuple[str, str]]) -> bytes:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        names = canonical_name if canonical else str.lower
        lines = [f"HTTP/1.1 {status} {reason}"]
        for name, value in headers + extra:
            lines.append(f"{names(name)}: {value}")
        if not self.keep_alive:
            lines.append(f"{names('connection')}: close")
        lines.append(f"{names('date')}: {formatdate(usegmt=True)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def respond(self, status: int, headers: list[tuple[str, str]], body: bytes = b"", *,
                      canonical: bool = False) -> None:
        """A complete response with a content-length."""
        head = self._head(status, headers, canonical, [("content-length", str(len(body)))])
        self.headers_sent = True
        await self._write(head if self.head_only else head + body)

    async def start_stream(self, status: int, headers: list[tuple[str, str]], *, canonical: bool = False) -> None:
        """Send the head of a chunked response; follow with :meth:`send` and :meth:`end`."""
        self._chunked = not self.head_only
        extra = [("transfer-encoding", "chunked")]
        self.headers_sent = True
        await self._write(self._head(status, headers, canonical, extra))

    async def send(self, data: bytes) -> None:
        """One chunk, flushed at once so the client sees each event when it happens."""
        if self._chunked and data:
            await self._write(b"%x\r\n%s\r\n" % (len(data), data))

    async def end(self) -> None:
        if self._chunked:
            self._chunked = False
            await self._write(b"0\r\n\r\n")

    def reset(self) -> None:
        """Drop the connection with a TCP reset: SO_LINGER with a zero timeout, then close."""
        self.keep_alive = False
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.writer.transport.abort()

    def drop(self) -> None:
        """Close without finishing the response (no final chunk): the client sees a cut stream."""
        self.keep_alive = False
        self.writer.transport.abort()

    async def wait_for_client_close(self, timeout: float | None) -> None:
        """Sit silently until the client hangs up or ``timeout`` passes."""
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    return
        except (asyncio.TimeoutError, ConnectionError, OSError):
            return
