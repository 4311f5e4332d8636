"""Server-sent events, as TGI, vLLM and Ollama's /v1 layer send them.

Each payload is one ``data:`` line holding compact JSON (or ``[DONE]``). We yield every ``data:``
line as soon as it arrives instead of waiting for the blank line that ends the event: none of
these servers splits a payload over several ``data:`` lines, old TGI releases are known to be
loose about framing, and it saves waiting on a blank line that may come in a later packet.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from workers.backends.base import Endpoint
from workers.backends.transport import error_in_stream, one_line, parse_json_line, protocol_error

DONE = "[DONE]"
_IGNORED_FIELDS = {"event", "id", "retry"}


def sse_data(endpoint: Endpoint, lines: Iterable[bytes]) -> Iterator[str]:
    """Yield the payload of every ``data:`` line (``data:`` with or without the space).

    Blank lines end events, ``:`` lines are keep-alive comments (axum sends ``:`` every 15 s of
    silence), ``event:``/``id:``/``retry:`` carry nothing we need. Any other line is a protocol
    error, except a bare JSON error object (a proxy or server answering 200 with a plain error
    body), which becomes the BackendError it describes.
    """
    for raw in lines:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise protocol_error(endpoint, "a line that is not UTF-8") from None
        if not line or line.startswith(":"):
            continue
        field, colon, value = line.partition(":")
        if field == "data" and colon:
            yield value[1:] if value.startswith(" ") else value
        elif field in _IGNORED_FIELDS and colon:
            continue
        elif line.lstrip().startswith("{"):
            payload = parse_json_line(endpoint, line)
            if "error" in payload or payload.get("object") == "error":
                raise error_in_stream(endpoint, payload)
            raise protocol_error(endpoint, f"a JSON line outside the event framing {one_line(line, 120)!r}")
        else:
            raise protocol_error(endpoint, f"malformed line {one_line(line, 120)!r}")
