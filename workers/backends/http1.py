"""A small HTTP/1.1 client on asyncio, for reading model streams inside a worker's event loop.

Only what a streaming POST needs: one request at a time per connection, keep-alive connections
pooled per origin (per event loop), response bodies framed by the chunked transfer coding, by
Content-Length or by the end of the connection. A read hands back every body byte that has
arrived, so a reader that waits a little between reads takes many events at once.

Failures are raised as httpx's exception classes (``ConnectTimeout``, ``ConnectError``,
``ReadTimeout``, ``ReadError``, ``RemoteProtocolError``...), so one mapping
(``transport.error_for_transport``) gives both readers the same messages and retry hints.
"""
from __future__ import annotations

import asyncio
import base64
import os
import ssl
import time
import weakref
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import httpx

MAX_HEAD_BYTES = 64 * 1024
KEEPALIVE_EXPIRY_S = 30.0
MAX_IDLE_PER_ORIGIN = 64
DEFAULT_PORTS = {"http": 80, "https": 443}

_ssl_context: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    global _ssl_context
    if _ssl_context is None:
        import certifi

        _ssl_context = ssl.create_default_context(cafile=certifi.where())
    return _ssl_context


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent on the request line
    host_header: str
    basic_auth: str | None  # user:password from the URL, as httpx would send it

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


def parse_url(url: str) -> Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise httpx.UnsupportedProtocol(f"Request URL has an unsupported protocol '{scheme}://'.")
    if not parts.hostname:
        raise httpx.InvalidURL("No host in the URL.")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise httpx.InvalidURL(str(exc)) from None
    host = parts.hostname
    shown_host = f"[{host}]" if ":" in host else host
    host_header = shown_host if port == DEFAULT_PORTS[scheme] else f"{shown_host}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    basic = None
    if parts.username is not None:
        basic = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return Target(scheme, host, port, path, host_header, basic)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: bytes as they arrive, and a way to wait for more."""

    def __init__(self, origin: tuple[str, str, int]) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.error: BaseException | None = None
        self.idle_since = 0.0
        self._waiter: asyncio.Future | None = None

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until more bytes arrive or the connection ends; ReadTimeout after ``timeout`` seconds."""
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(max(timeout, 0.0), _time_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def reusable(self, now: float) -> bool:
        return (not self.closed and self.transport is not None and not self.transport.is_closing()
                and not self.buffer and now - self.idle_since < KEEPALIVE_EXPIRY_S)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


def _time_out(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout("timed out"))


@dataclass
class Pool:
    """Idle keep-alive connections of one event loop, per origin."""

    idle: dict[tuple[str, str, int], list[_Connection]] = field(default_factory=dict)

    def take(self, origin: tuple[str, str, int]) -> _Connection | None:
        now = time.monotonic()
        waiting = self.idle.get(origin) or []
        while waiting:
            connection = waiting.pop()
            if connection.reusable(now):
                return connection
            connection.abort()
        return None

    def give_back(self, connection: _Connection) -> None:
        waiting = self.idle.setdefault(connection.origin, [])
        if len(waiting) >= MAX_IDLE_PER_ORIGIN or connection.closed:
            connection.abort()
            return
        connection.idle_since = time.monotonic()
        waiting.append(connection)

    def close(self) -> None:
        for waiting in self.idle.values():
            for connection in waiting:
                connection.abort()
        self.idle.clear()


_pools: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def loop_pool() -> Pool:
    """The running loop's pool (connections belong to the loop that opened them)."""
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        pool = _pools[loop] = Pool()
    return pool


async def _connect(target: Target, timeout: float) -> _Connection:
    loop = asyncio.get_running_loop()
    connection = _Connection(target.origin)
    tls = _tls() if target.scheme == "https" else None
    try:
        await asyncio.wait_for(loop.create_connection(
            lambda: connection, target.host, target.port, ssl=tls,
            server_hostname=target.host if tls else None,
            ssl_handshake_timeout=timeout if tls else None), timeout)
    except (TimeoutError, asyncio.TimeoutError):
        raise httpx.ConnectTimeout("timed out") from None
    except ssl.SSLError as exc:
        # A certificate or handshake failure: its own words ("CERTIFICATE_VERIFY_FAILED"), not the errno's.
        raise httpx.ConnectError(f"TLS: {getattr(exc, 'verify_message', None) or exc.reason or exc}") from exc
    except OSError as exc:
        reason = os.strerror(exc.errno) if isinstance(exc.errno, int) and exc.errno > 0 else str(exc)
        raise httpx.ConnectError(reason or type(exc).__name__) from exc
    return connection


def _request_bytes(target: Target, method: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {target.path} HTTP/1.1", f"Host: {target.host_header}"]
    names = {name.lower() for name in headers}
    if target.basic_auth is not None and "authorization" not in names:
        token = base64.b64encode(target.basic_auth.encode("utf-8")).decode("ascii")
        headers = {**headers, "Authorization": f"Basic {token}"}
    for name, value in headers.items():
        if any(c in value for c in "\r\n\x00") or any(c in name for c in "\r\n\x00: "):
            raise httpx.LocalProtocolError(f"Illegal header {name!r}")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Response:
    """A response whose head has arrived; ``read`` gives its body as it arrives."""

    def __init__(self, connection: _Connection, status: int, headers: list[tuple[str, str]], pool: Pool) -> None:
        self._connection = connection
        self._pool = pool
        self.status_code = status
        self.headers = headers
        values = {name: value.lower() for name, value in headers}
        self._chunked = "chunked" in values.get("transfer-encoding", "")
        length = values.get("content-length")
        self._left: int | None = None  # bytes left: of the body (Content-Length) or of the current chunk
        self._state = "size"  # chunked: "size", "data", "crlf", "trailer"
        if not self._chunked and length is not None:
            try:
                self._left = int(length)
            except ValueError:
                raise httpx.RemoteProtocolError(f"Invalid Content-Length {length!r}") from None
        self._keep_alive = "close" not in values.get("connection", "") and (self._chunked or self._left is not None)
        self.complete = not self._chunked and self._left == 0

    async def read(self, timeout: float) -> bytes:
        """Every body byte that has arrived (waiting at most ``timeout`` for some); b"" at the end."""
        connection = self._connection
        while not self.complete:
            data = self._take()
            if data or self.complete:
                return data
            if connection.closed:
                if connection.error is not None and not isinstance(connection.error, EOFError):
                    raise httpx.ReadError(str(connection.error) or type(connection.error).__name__)
                if not self._chunked and self._left is None:
                    self.complete = True  # the body ends with the connection
                    return b""
                what = "incomplete chunked read" if self._chunked else "incomplete body"
                raise httpx.RemoteProtocolError(f"peer closed connection without sending complete message body: "
                                                f"{what}")
            await connection.wait(timeout)
        return b""

    def _take(self) -> bytes:
        buffer = self._connection.buffer
        if not self._chunked:
            if self._left is None:
                data = bytes(buffer)
            else:
                data = bytes(buffer[: self._left])
                self._left -= len(data)
                self.complete = self._left == 0
            del buffer[: len(data)]
            return data
        out = bytearray()
        position = 0
        while True:
            if self._state == "size":
                end = buffer.find(b"\r\n", position)
                if end < 0:
                    break
                size_text = bytes(buffer[position:end]).split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise httpx.RemoteProtocolError(f"Invalid chunk size {size_text[:20]!r}") from None
                position = end + 2
                self._left = size
                self._state = "data" if size else "trailer"
            elif self._state == "data":
                take = min(self._left, len(buffer) - position)
                if take <= 0:
                    break
                out += buffer[position:position + take]
                position += take
                self._left -= take
                if self._left == 0:
                    self._state = "crlf"
            elif self._state == "crlf":
                if len(buffer) - position < 2:
                    break
                if buffer[position:position + 2] != b"\r\n":
                    raise httpx.RemoteProtocolError("Missing CRLF after a chunk")
                position += 2
                self._state = "size"
            else:  # trailer: header lines until a blank one
                end = buffer.find(b"\r\n", position)
                if end < 0:
                    break
                blank = end == position
                position = end + 2
                if blank:
                    self.complete = True
                    break
        del buffer[:position]
        return bytes(out)

    def close(self) -> None:
        """Give the connection back if the body was read to its end, else drop it."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self.complete and self._keep_alive and not connection.buffer:
            self._pool.give_back(connection)
        else:
            connection.abort()


def _parse_head(head: bytes) -> tuple[int, list[tuple[str, str]]]:
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(f"Invalid status line {status_line[:80]!r}")
    headers = []
    for line in header_lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise httpx.RemoteProtocolError(f"Invalid header line {line[:80]!r}")
        headers.append((name.strip().lower(), value.strip()))
    status = int(parts[1])
    if parts[0] == "HTTP/1.0":
        keep = any(name == "connection" and "keep-alive" in value.lower() for name, value in headers)
        if not keep:
            headers.append(("connection", "close"))
    return status, headers


async def _read_head(connection: _Connection, timeout_at: float) -> tuple[int, list[tuple[str, str]]]:
    """The response's status and headers (skipping any 1xx interim response)."""
    while True:
        end = connection.buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(connection.buffer[:end])
            del connection.buffer[:end + 4]
            status, headers = _parse_head(head)
            if 100 <= status < 200:
                continue
            return status, headers
        if len(connection.buffer) > MAX_HEAD_BYTES:
            raise httpx.RemoteProtocolError("The response head is too large")
        if connection.closed:
            if connection.error is not None and not isinstance(connection.error, EOFError):
                raise httpx.ReadError(str(connection.error) or type(connection.error).__name__)
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        await connection.wait(timeout_at - time.monotonic())


async def post(url: str, headers: dict[str, str], body: bytes, *, connect_timeout_s: float,
               head_timeout_s: float) -> Response:
    """Send a POST and wait for the response head (at most ``head_timeout_s`` after sending).

    A pooled connection the server had closed meanwhile fails before any byte of an answer; the
    request then goes once more on a new connection.
    """
    target = parse_url(url)
    request = _request_bytes(target, "POST", headers, body)
    pool = loop_pool()
    connection = pool.take(target.origin)
    reused = connection is not None
    while True:
        if connection is None:
            connection = await _connect(target, connect_timeout_s)
        try:
            connection.transport.write(request)
            status, response_headers = await _read_head(connection, time.monotonic() + head_timeout_s)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            connection.abort()
            if reused and not connection.buffer:
                connection, reused = None, False
                continue
            raise
        except BaseException:
            connection.abort()
            raise
        return Response(connection, status, response_headers, pool)
