"""Ollama's native API: ``POST /api/chat`` streaming NDJSON.

Why httpx rather than the ``ollama`` client: the client has no timeout at all by default, raises
a raw ``httpx.ConnectError`` for streaming calls but a builtin ``ConnectError`` otherwise, crashes
on a blank line, validates every chunk with pydantic, and has no notion of a stall or a total
deadline. Reading NDJSON takes a few lines, and the shared transport gives Ollama the same
timeouts, auth and error classification as the other adapters.
"""
from __future__ import annotations

from collections.abc import Sequence

from workers.backends.base import (
    BackendAdapter,
    BackendError,
    DecodingParams,
    Delta,
    DiscoveredModel,
    Endpoint,
    Message,
    StreamItem,
    StreamParser,
)
from workers.backends.chat_stream import chat_messages
from workers.backends.streamtools import (
    StreamClock,
    as_int,
    is_greedy,
    normalise_finish,
    require_chat_api,
    require_model,
)
from workers.backends.transport import (
    error_in_stream,
    incomplete_error,
    parse_json_line,
    protocol_error,
    request_json,
)

# /api/show reads model metadata from disk: quick, but one request per model, so keep each short.
SHOW_TIMEOUT_S = 5.0


def ollama_options(params: DecodingParams) -> dict:
    """Our decoding parameters as Ollama ``options``.

    Greedy: ``temperature: 0`` with a fixed seed (the preset's, or 0), as Ollama's sampler is
    only reproducible with both. A value we leave unset (None) is not sent, so the server's
    default applies, which for Ollama is the model's Modelfile or top_k 40 / top_p 0.9; set them
    in the preset to compare like with like. Stop strings are removed from the output by Ollama
    itself.
    """
    options: dict = {"num_predict": params.max_new_tokens}
    if is_greedy(params):
        options["temperature"] = 0
        options["seed"] = params.seed if params.seed is not None else 0
    else:
        if params.temperature is not None:
            options["temperature"] = params.temperature
        if params.top_k is not None and params.top_k > 0:
            options["top_k"] = params.top_k
        if params.top_p is not None and params.top_p > 0:
            options["top_p"] = params.top_p
        if params.seed is not None:
            options["seed"] = params.seed
    if params.repetition_penalty is not None and params.repetition_penalty > 0:
        options["repeat_penalty"] = params.repetition_penalty
    stops = [s for s in params.stop if s]
    if stops:
        options["stop"] = stops
    return options


class OllamaChatParser(StreamParser):
    """/api/chat's NDJSON lines.

    Lines are not tokens (Ollama holds back text that could start a stop string), so the
    output token count is the server's ``eval_count`` from the ``done: true`` line. TTFT and
    TPOT are measured here (reference §5), not taken from the server's nanosecond durations:
    the server's figures leave out the time waiting for a free slot and the network.
    Thinking text (``message.thinking``) is not part of the answer and does not start the clock.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.clock = StreamClock()
        self.final: dict | None = None
        self.complete = False

    def start(self) -> float:
        return self.clock.start()

    def feed(self, line: bytes) -> list[StreamItem]:
        if not line.strip():
            return []
        payload = parse_json_line(self.endpoint, line)
        if "error" in payload:
            # A mid-stream failure: one {"error": ...} line on a 200 response, then EOF.
            raise error_in_stream(self.endpoint, payload)
        message = payload.get("message")
        text = (message.get("content") or "") if isinstance(message, dict) else ""
        items: list[StreamItem] = []
        if text:
            self.clock.event(visible=True)
            items.append(Delta(text))
        if payload.get("done") is True:
            self.clock.event(visible=False)
            self.final = payload
            self.complete = True
        return items

    def end(self) -> list[StreamItem]:
        if self.final is None:
            raise incomplete_error(self.endpoint, "ended the stream without its final done line")
        final = self.final
        return [self.clock.finish(normalise_finish(final.get("done_reason")), as_int(final.get("prompt_eval_count")),
                                  as_int(final.get("eval_count")))]


class OllamaAdapter(BackendAdapter):
    kind = "ollama"

    def request_for(self, endpoint: Endpoint, messages: Sequence[Message], params: DecodingParams) -> tuple[str, dict]:
        return "/api/chat", {"model": endpoint.model_id, "messages": chat_messages(messages), "stream": True,
                             "options": ollama_options(params)}

    def open_stream(self, endpoint: Endpoint, messages: Sequence[Message],
                    params: DecodingParams) -> tuple[str, dict, StreamParser]:
        require_chat_api(endpoint)
        require_model(endpoint)
        path, body = self.request_for(endpoint, messages, params)
        return path, body, OllamaChatParser(endpoint)

    def health(self, endpoint: Endpoint) -> None:
        # /api/version answers only if this really is Ollama ("/" answers on any web server).
        version = request_json(endpoint, "GET", "/api/version")
        if not isinstance(version, dict) or "version" not in version:
            raise protocol_error(endpoint, "/api/version did not name a version (is this an Ollama server?)")

    def discover(self, endpoint: Endpoint) -> list[DiscoveredModel]:
        """Local models from /api/tags; the context length from the listing if present, else /api/show."""
        listing = request_json(endpoint, "GET", "/api/tags")
        models = listing.get("models") if isinstance(listing, dict) else None
        found: list[DiscoveredModel] = []
        show_works = True
        for entry in models or ():
            if not isinstance(entry, dict) or not (entry.get("model") or entry.get("name")):
                continue
            name = str(entry.get("model") or entry.get("name"))
            details = entry.get("details") if isinstance(entry.get("details"), dict) else {}
            context_length = as_int(entry.get("context_length"))
            if context_length is None and show_works:
                try:
                    context_length = self._context_length(endpoint, name)
                except BackendError:
                    # A failing /api/show costs a timeout per model; one failure is enough to stop asking.
                    show_works = False
            found.append(DiscoveredModel(model_id=name, context_length=context_length,
                                         parameter_size=str(details.get("parameter_size") or ""),
                                         family=str(details.get("family") or "")))
        return found

    def _context_length(self, endpoint: Endpoint, name: str) -> int | None:
        shown = request_json(endpoint, "POST", "/api/show", {"model": name}, read_timeout_s=SHOW_TIMEOUT_S)
        info = shown.get("model_info") if isinstance(shown, dict) else None
        if not isinstance(info, dict):
            return None
        architecture = info.get("general.architecture")
        if architecture and as_int(info.get(f"{architecture}.context_length")) is not None:
            return as_int(info[f"{architecture}.context_length"])
        for key, value in info.items():
            if key.endswith(".context_length") and as_int(value) is not None:
                return as_int(value)
        return None


ADAPTER = OllamaAdapter()
