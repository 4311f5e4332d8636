"""HTTP plumbing shared by the adapters.

One pooled httpx client per process, streaming POSTs that detect stalls and enforce a total
deadline (on the calling thread with httpx, ``stream_lines``; in an event loop with ``http1``,
``astream_lines``), plain JSON requests for health checks and discovery, and the mapping of every failure
(transport error, HTTP status, error object inside a stream) to a :class:`BackendError` with a
plain message and a retry hint.

Timeouts, as the adapters see them:

* ``connect_timeout_s``: TCP (and TLS) connect.
* ``stall_timeout_s``: the longest wait for *any* byte from the server: the response headers (so
  it also covers a model load or a long prefill before the first byte) and every read after them.
  httpx applies its read timeout to each socket read, which is exactly this. Code ``"stall"``,
  retryable: a stalled server often recovers and the caller only retries when nothing was shown.
* ``deadline_s``: the whole request, from sending it to the last byte. While waiting for the
  headers the read timeout is capped at the time left; once the body streams, a timer shuts the
  socket down when the time is up, so a server that trickles bytes cannot stretch a request past
  its deadline. Code ``"deadline"``, **not** retryable: the request's whole time budget is spent,
  and a retry would make the rater wait that long again.
"""
from __future__ import annotations

import http
import json
import os
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import urlsplit, urlunsplit

import httpx

from workers.backends.base import BackendError, Endpoint

SERVER_LABELS = {"tgi": "TGI", "ollama": "Ollama", "openai": "The OpenAI-compatible server"}
# Error bodies are read for their message only; a huge HTML page from a proxy is cut short.
MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_DETAIL_CHARS = 500
USER_AGENT = "arena-worker"

_client: httpx.Client | None = None
_client_pid: int | None = None
_client_lock = threading.Lock()


def shared_client() -> httpx.Client:
    """The process's pooled client: keep-alive connections save a TCP handshake per generation.

    Created lazily and again after a fork (a pooled socket must never be shared between processes).
    Cookies are refused: a server's cookie must not leak into another endpoint's requests.
    Per-request settings (auth header, timeouts) are passed on each call, so one client serves
    every endpoint from every worker thread.
    """
    global _client, _client_pid
    pid = os.getpid()
    if _client is None or _client_pid != pid:
        with _client_lock:
            if _client is None or _client_pid != pid:
                _client = httpx.Client(
                    limits=httpx.Limits(max_connections=512, max_keepalive_connections=64, keepalive_expiry=30.0),
                    cookies=httpx.Cookies(CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))),
                    follow_redirects=False,
                    headers={"User-Agent": USER_AGENT},
                )
                _client_pid = pid
    return _client


def label(endpoint: Endpoint) -> str:
    return SERVER_LABELS.get(endpoint.kind, "The server")


def display_url(url: str) -> str:
    """The URL without any user:password part, for messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def join_url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


def request_headers(endpoint: Endpoint, *, streaming: bool = False) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if streaming:
        # A compressed stream can be held back by the decompressor; ask for plain bytes.
        headers = {"Accept-Encoding": "identity"}
    if endpoint.auth_token:
        headers["Authorization"] = f"Bearer {endpoint.auth_token}"
    return headers


def make_error(endpoint: Endpoint, message: str, *, retryable: bool, code: str,
               status: int | None = None) -> BackendError:
    """Every BackendError is built here, so the bearer token can never reach a message."""
    if endpoint.auth_token:
        message = redact_secret(message, endpoint.auth_token)
    return BackendError(message, retryable=retryable, status=status, code=code)


# Shortest start of a secret that is still treated as a piece of it when a cut leaves it behind.
_MIN_SECRET_PIECE = 4


def redact_secret(message: str, secret: str) -> str:
    """The message without the secret, including a start of it left where a detail was cut ("…").

    Details are cut to length before the endpoint is known (``one_line``): a server that echoes
    the token can have it cut in half, and the first half must not survive either.
    """
    message = message.replace(secret, "[redacted]")

    def cut_piece(match: re.Match) -> str:
        head = match.group(1)
        for size in range(min(len(secret) - 1, len(head)), _MIN_SECRET_PIECE - 1, -1):
            if head.endswith(secret[:size]):
                return head[:-size] + "[redacted]…"
        return match.group(0)

    return re.sub(r"(\S*)…", cut_piece, message)


def protocol_error(endpoint: Endpoint, what: str) -> BackendError:
    return make_error(endpoint, f"{label(endpoint)} sent a response we cannot read: {what}",
                      retryable=False, code="protocol")


def incomplete_error(endpoint: Endpoint, what: str) -> BackendError:
    # The server dropped the answer half way (a crashed runner, a restarted pod): trying again can help.
    return make_error(endpoint, f"{label(endpoint)} {what}; the answer is incomplete.", retryable=True, code="server")


def one_line(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_text(payload: object) -> str:
    """The message inside any error shape these servers use, or "" if there is none.

    TGI and Ollama: ``{"error": "..."}``; OpenAI style (vLLM, TGI chat streams, Ollama /v1):
    ``{"error": {"message": ...}}``; older vLLM: ``{"object": "error", "message": ...}``;
    FastAPI-based servers: ``{"detail": ...}``.
    """
    if not isinstance(payload, dict):
        return ""
    error = payload.get("error")
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        message = error.get("message")
        return str(message) if message else json.dumps(error)
    if payload.get("object") == "error" and payload.get("message"):
        return str(payload["message"])
    if "detail" in payload and payload["detail"]:
        detail = payload["detail"]
        return detail if isinstance(detail, str) else json.dumps(detail)
    return ""


def error_type_of(payload: object) -> str:
    if not isinstance(payload, dict):
        return ""
    if isinstance(payload.get("error_type"), str):
        return payload["error_type"]
    error = payload.get("error")
    if isinstance(error, dict) and isinstance(error.get("type"), str):
        return error["type"]
    if payload.get("object") == "error" and isinstance(payload.get("type"), str):
        return payload["type"]
    return ""


def detail_from_body(body: bytes) -> tuple[str, str]:
    """(message, error_type) from an error body, which may be JSON or plain text (TGI's axum rejections)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        payload = json.loads(text)
    except ValueError:
        return one_line(text), ""
    return one_line(error_text(payload) or text), error_type_of(payload)


def _is_template_error(detail: str, error_type: str) -> bool:
    return error_type == "template_error" or detail.startswith("Template error")


def error_for_status(endpoint: Endpoint, status: int, detail: str, error_type: str = "") -> BackendError:
    """Map an HTTP error status (and the server's message) to a BackendError."""
    name = label(endpoint)
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    detail = detail or phrase
    if status in (401, 403):
        return make_error(endpoint, f"{name} refused our credentials ({status}): {detail}. "
                                    "Check the server's bearer token.", retryable=False, code="auth", status=status)
    if status == 404:
        return make_error(endpoint, f"{name} does not know this model or route (404): {detail}",
                          retryable=False, code="not_found", status=status)
    if status in (429, 503) or error_type == "overloaded":
        return make_error(endpoint, f"{name} is overloaded ({status}): {detail}",
                          retryable=True, code="overloaded", status=status)
    if _is_template_error(detail, error_type):
        return make_error(endpoint, f"{name} could not apply the model's chat template ({status}): {detail}",
                          retryable=False, code="template", status=status)
    if status == 424 or error_type == "generation":
        return make_error(endpoint, f"{name} failed while generating ({status}): {detail}",
                          retryable=True, code="generation", status=status)
    if status == 408:
        return make_error(endpoint, f"{name} timed out reading the request ({status}): {detail}",
                          retryable=True, code="timeout", status=status)
    if 400 <= status < 500:
        return make_error(endpoint, f"{name} rejected the request ({status}): {detail}",
                          retryable=False, code="validation", status=status)
    if status >= 500:
        return make_error(endpoint, f"{name} failed ({status}): {detail}", retryable=True, code="server", status=status)
    return make_error(endpoint, f"{name} answered with the unexpected status {status}: {detail}",
                      retryable=False, code="protocol", status=status)


def error_in_stream(endpoint: Endpoint, payload: dict) -> BackendError:
    """Map an error object that arrived *inside* a 200 stream.

    TGI ``/generate_stream`` sends ``{"error", "error_type"}``; TGI chat sends
    ``{"error": {"message", "http_status_code": 422}}`` whatever the real cause (so the message
    prefix decides); vLLM sends OpenAI error objects; Ollama sends ``{"error": "..."}``.
    Validation and template errors are permanent. Anything else went wrong while generating
    (a shard failure, an out-of-memory runner): retryable, since the caller only retries when
    nothing was shown yet.
    """
    name = label(endpoint)
    message = one_line(error_text(payload) or json.dumps(payload))
    error_type = error_type_of(payload)
    error = payload.get("error")
    code_value = error.get("code") if isinstance(error, dict) else payload.get("code")
    status = code_value if isinstance(code_value, int) else None
    lowered_type = error_type.lower()
    if _is_template_error(message, error_type):
        return make_error(endpoint, f"{name} could not apply the model's chat template (422): {message}",
                          retryable=False, code="template", status=422)
    if (error_type in ("validation", "tool_error") or message.startswith(("Input validation error", "Tool error"))
            or lowered_type in ("badrequesterror", "invalid_request_error")):
        status = status if status and 400 <= status < 500 else 422
        return make_error(endpoint, f"{name} rejected the request ({status}): {message}",
                          retryable=False, code="validation", status=status)
    if lowered_type in ("notfounderror", "not_found_error") or status == 404:
        return make_error(endpoint, f"{name} does not know this model (404): {message}",
                          retryable=False, code="not_found", status=404)
    if error_type == "overloaded" or message.startswith("Model is overloaded") or status in (429, 503):
        # TGI answers 429 for this on its non-streaming routes; the stream event carries no status.
        status = status if status in (429, 503) else 429
        return make_error(endpoint, f"{name} is overloaded ({status}): {message}", retryable=True, code="overloaded",
                          status=status)
    return make_error(endpoint, f"{name} reported an error mid-answer: {message}", retryable=True, code="generation",
                      status=status)


_ERRNO_PREFIX = re.compile(r"^\[Errno -?\d+\]\s*")


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return _ERRNO_PREFIX.sub("", text).rstrip(".") or type(exc).__name__


class _Timing:
    """When the request started and how long the endpoint allows it."""

    def __init__(self, endpoint: Endpoint, started: float) -> None:
        self.started = started
        self.deadline_at = started + endpoint.deadline_s

    def remaining(self) -> float:
        return self.deadline_at - time.perf_counter()


def deadline_error(endpoint: Endpoint) -> BackendError:
    return make_error(endpoint, f"{label(endpoint)} did not finish within the {endpoint.deadline_s:g} s deadline.",
                      retryable=False, code="deadline")


def error_for_transport(endpoint: Endpoint, exc: httpx.HTTPError, *, answering: bool,
                        timing: _Timing | None = None) -> BackendError:
    """Map an httpx exception; ``answering`` says whether the response headers had arrived."""
    name = label(endpoint)
    where = display_url(endpoint.base_url)
    if isinstance(exc, httpx.ConnectTimeout):
        return make_error(endpoint, f"Could not connect to {name} at {where}: no answer within "
                                    f"{endpoint.connect_timeout_s:g} s.", retryable=True, code="refused")
    if isinstance(exc, httpx.ConnectError):
        return make_error(endpoint, f"Could not connect to {name} at {where}: {_reason(exc)}.",
                          retryable=True, code="refused")
    if isinstance(exc, httpx.ReadTimeout):
        if timing is not None and timing.remaining() <= 0.01:
            return deadline_error(endpoint)
        moment = "mid-answer" if answering else "before answering"
        return make_error(endpoint, f"{name} stalled {moment}: nothing received for {endpoint.stall_timeout_s:g} s.",
                          retryable=True, code="stall")
    if isinstance(exc, (httpx.WriteTimeout, httpx.PoolTimeout)):
        return make_error(endpoint, f"Timed out sending the request to {name} at {where}.",
                          retryable=True, code="timeout")
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.CloseError)):
        moment = "mid-answer" if answering else "before answering"
        return make_error(endpoint, f"{name} closed the connection {moment} ({_reason(exc)}).",
                          retryable=True, code="refused")
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return make_error(endpoint, f"The server URL {where} is not usable: {_reason(exc)}.",
                          retryable=False, code="validation")
    return make_error(endpoint, f"Talking to {name} at {where} failed: {_reason(exc)}.", retryable=True, code="server")


class _DeadlineWatch:
    """Shuts the response's socket down when the deadline passes, waking a blocked read.

    httpx's read timeout bounds each read, not the whole body, so without this a server that
    sends a byte every few seconds could keep a request going forever.
    """

    def __init__(self, response: httpx.Response, seconds: float) -> None:
        self.fired = False
        self._done = False
        self._lock = threading.Lock()
        network_stream = response.extensions.get("network_stream")
        self._socket = network_stream.get_extra_info("socket") if network_stream is not None else None
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            if self._socket is not None:
                try:
                    self._socket.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cancel(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()


def _read_error_body(response: httpx.Response) -> bytes:
    body = b""
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) >= MAX_ERROR_BODY_BYTES:
            break
    return body[:MAX_ERROR_BODY_BYTES]


def _timeout(endpoint: Endpoint, read_s: float) -> httpx.Timeout:
    return httpx.Timeout(connect=endpoint.connect_timeout_s, read=read_s, write=read_s, pool=endpoint.connect_timeout_s)


def stream_lines(endpoint: Endpoint, path: str, body: dict, *,
                 start_clock: Callable[[], float] = time.perf_counter) -> Iterator[bytes]:
    """POST ``body`` and yield the response body's lines (without line ends) as they arrive.

    ``start_clock`` is called just before the request is sent and returns t0
    (``time.perf_counter()``), so the deadline and the caller's time to first token share one
    origin, and neither includes setting up the process's client. Raises BackendError for every
    failure, including an error status (whose body is read for its message).
    """
    client = shared_client()
    timing = _Timing(endpoint, start_clock())
    watch: _DeadlineWatch | None = None
    answering = False
    url = join_url(endpoint.base_url, path)
    try:
        # Until the headers arrive, the read timeout is the stall limit or the time left, whichever is less.
        read_s = max(0.001, min(endpoint.stall_timeout_s, timing.remaining()))
        with client.stream("POST", url, json=body, headers=request_headers(endpoint, streaming=True),
                                    timeout=_timeout(endpoint, read_s)) as response:
            if response.status_code >= 400:
                detail, error_type = detail_from_body(_read_error_body(response))
                raise error_for_status(endpoint, response.status_code, detail, error_type)
            answering = True
            remaining = timing.remaining()
            if remaining <= 0:
                raise deadline_error(endpoint)
            watch = _DeadlineWatch(response, remaining)
            pending = b""
            for chunk in response.iter_bytes():
                pending += chunk
                if b"\n" not in chunk:
                    continue
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line[:-1] if line.endswith(b"\r") else line
            if watch.fired:
                raise deadline_error(endpoint)
            if pending:
                yield pending[:-1] if pending.endswith(b"\r") else pending
    except httpx.HTTPError as exc:
        if watch is not None and watch.fired:
            raise deadline_error(endpoint) from exc
        raise error_for_transport(endpoint, exc, answering=answering, timing=timing) from exc
    finally:
        if watch is not None:
            watch.cancel()


async def astream_lines(endpoint: Endpoint, path: str, body: dict, *,
                        start_clock: Callable[[], float] = time.perf_counter) -> AsyncIterator[list[bytes]]:
    """``stream_lines`` for a coroutine: the same request, timeouts and errors, read in the running
    event loop (``http1``); yields the complete lines of each read together.

    Each read waits at most the stall limit or the time left, whichever is less, so a server that
    trickles bytes cannot stretch a request past its deadline.
    """
    from workers.backends import http1

    timing = _Timing(endpoint, start_clock())
    answering = False
    response = None
    url = join_url(endpoint.base_url, path)
    try:
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "keep-alive",
                   "Content-Type": "application/json", **request_headers(endpoint, streaming=True)}
        response = await http1.post(url, headers, payload, connect_timeout_s=endpoint.connect_timeout_s,
                                    head_timeout_s=max(0.001, min(endpoint.stall_timeout_s, timing.remaining())))
        if response.status_code >= 400:
            error_body = b""
            while len(error_body) < MAX_ERROR_BODY_BYTES and (chunk := await response.read(_read_wait(endpoint, timing))):
                error_body += chunk
            detail, error_type = detail_from_body(error_body[:MAX_ERROR_BODY_BYTES])
            raise error_for_status(endpoint, response.status_code, detail, error_type)
        answering = True
        if timing.remaining() <= 0:
            raise deadline_error(endpoint)
        pending = b""
        while chunk := await response.read(_read_wait(endpoint, timing)):
            pending += chunk
            if b"\n" not in chunk:
                continue
            *lines, pending = pending.split(b"\n")
            yield [line[:-1] if line.endswith(b"\r") else line for line in lines]
        if pending:
            yield [pending[:-1] if pending.endswith(b"\r") else pending]
    except httpx.HTTPError as exc:
        raise error_for_transport(endpoint, exc, answering=answering, timing=timing) from exc
    finally:
        if response is not None:
            response.close()


def _read_wait(endpoint: Endpoint, timing: _Timing) -> float:
    return max(0.0, min(endpoint.stall_timeout_s, timing.remaining()))


def request_json(endpoint: Endpoint, method: str, path: str, body: dict | None = None, *,
                 read_timeout_s: float | None = None) -> object:
    """A small non-streaming request (health, discovery); returns the parsed JSON body, or None if empty."""
    read_s = min(endpoint.stall_timeout_s, endpoint.deadline_s)
    if read_timeout_s is not None:
        read_s = min(read_s, read_timeout_s)
    url = join_url(endpoint.base_url, path)
    try:
        response = shared_client().request(method, url, json=body, headers=request_headers(endpoint),
                                           timeout=_timeout(endpoint, read_s))
    except httpx.HTTPError as exc:
        raise error_for_transport(endpoint, exc, answering=False) from exc
    if response.status_code >= 400:
        detail, error_type = detail_from_body(response.content[:MAX_ERROR_BODY_BYTES])
        raise error_for_status(endpoint, response.status_code, detail, error_type)
    if not response.content.strip():
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise protocol_error(endpoint, f"{path} did not return JSON ({one_line(response.text, 120)!r})") from exc


def parse_json_line(endpoint: Endpoint, text: str | bytes) -> dict:
    """One JSON object from a stream line; anything else is a protocol error (permanent)."""
    try:
        payload = json.loads(text)
    except ValueError:
        shown = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        raise protocol_error(endpoint, f"malformed line {one_line(shown, 120)!r}") from None
    if not isinstance(payload, dict):
        raise protocol_error(endpoint, f"expected a JSON object, got {one_line(json.dumps(payload), 120)!r}")
    return payload
