"""Server-sent events, as TGI, vLLM and Ollama's /v1 layer send them.

Each payload is one ``data:`` line holding compact JSON (or ``[DONE]``). We yield every ``data:``
line as soon as it arrives instead of waiting for the blank line that ends the event: none of
these servers splits a payload over several ``data:`` lines, old TGI releases are known to be
loose about framing, and it saves waiting on a blank line that may come in a later packet.
"""
from __future__ import annotations

from workers.backends.base import Endpoint
from workers.backends.transport import error_in_stream, one_line, parse_json_line, protocol_error

DONE = "[DONE]"
_IGNORED_FIELDS = {"event", "id", "retry"}


def sse_payload(endpoint: Endpoint, raw: bytes) -> str | None:
    """The payload of a ``data:`` line (``data:`` with or without the space); None for any other line
    that carries nothing.

    Blank lines end events, ``:`` lines are keep-alive comments (axum sends ``:`` every 15 s of
    silence), ``event:``/``id:``/``retry:`` carry nothing we need. Any other line is a protocol
    error, except a bare JSON error object (a proxy or server answering 200 with a plain error
    body), which becomes the BackendError it describes.
    """
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise protocol_error(endpoint, "a line that is not UTF-8") from None
    if not line or line.startswith(":"):
        return None
    field, colon, value = line.partition(":")
    if field == "data" and colon:
        return value[1:] if value.startswith(" ") else value
    if field in _IGNORED_FIELDS and colon:
        return None
    if line.lstrip().startswith("{"):
        payload = parse_json_line(endpoint, line)
        if "error" in payload or payload.get("object") == "error":
            raise error_in_stream(endpoint, payload)
        raise protocol_error(endpoint, f"a JSON line outside the event framing {one_line(line, 120)!r}")
    raise protocol_error(endpoint, f"malformed line {one_line(line, 120)!r}")
