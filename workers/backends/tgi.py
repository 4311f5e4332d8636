"""Hugging Face Text Generation Inference (TGI).

* ``api="chat"``: the Messages API, ``POST /v1/chat/completions`` with ``stream: true`` and
  ``stream_options.include_usage`` (the server applies the model's chat template).
* ``api="completion"``: ``POST /generate_stream`` with a prompt we render ourselves (see
  :func:`render_prompt`), for base models without a chat template.

Why httpx and not the ``text-generation`` client, on both routes:

* Chat streaming is broken in text-generation 0.7.0 against any current TGI: its chunk model
  requires a ``tool_calls`` key that TGI omits from text deltas, so every chunk fails validation,
  and it has no ``[DONE]`` handling.
* Raw-prompt streaming does work, but the client would still be the odd one out: it uses
  ``requests`` with one timeout number (no separate connect timeout, no total deadline), opens a
  new connection per call, always posts to the compat route ``/`` with every parameter
  (nulls included), turns TGI's text/plain 4xx bodies into a JSON decode error and unknown
  error types (``incomplete_generation_stream``, template errors) into ``UnknownError``, rejects
  valid values client-side (``frequency_penalty=0``), and pins ``huggingface-hub<1.0``. It is
  deprecated upstream. With httpx, the same transport code as the other adapters gives us one
  set of stall, deadline, auth and error-classification rules, and the parsing is ~30 lines.
"""
from __future__ import annotations

from collections.abc import Sequence

from workers.backends.base import (
    BackendAdapter,
    DecodingParams,
    Delta,
    DiscoveredModel,
    Endpoint,
    Message,
    StreamItem,
    StreamParser,
)
from workers.backends.chat_stream import ChatCompletionsParser, chat_messages
from workers.backends.sse import sse_payload
from workers.backends.streamtools import StopTrimmer, StreamClock, as_int, is_greedy, normalise_finish
from workers.backends.transport import (
    error_in_stream,
    incomplete_error,
    make_error,
    parse_json_line,
    protocol_error,
    request_json,
)

# TGI's --max-stop-sequences default; a server started with a larger value is rare.
MAX_STOP_SEQUENCES = 4
SERVED_MODEL = "tgi"


def render_prompt(messages: Sequence[Message]) -> str:
    """Render a conversation as a plain transcript for a base model (no chat template).

    Format: system messages first, as bare paragraphs; then one paragraph per turn,
    ``User: <text>`` or ``Assistant: <text>``; paragraphs are separated by a blank line; the
    prompt ends with the cue ``Assistant:`` (no trailing space: most tokenizers attach the space
    to the next word). If the last message is the assistant's, the prompt ends with its text
    instead, so the model continues it. Example::

        You are terse.

        User: Hi

        Assistant: Hello.

        User: Name a colour.

        Assistant:

    A base model may go on to write the next ``User:`` turn itself; give such contenders the stop
    string ``"\\nUser:"`` in their decoding preset.
    """
    paragraphs: list[str] = []
    for message in messages:
        if message.role == "system":
            if message.content.strip():
                paragraphs.append(message.content.strip())
        elif message.role == "assistant":
            paragraphs.append(f"Assistant: {message.content}".rstrip())
        else:
            paragraphs.append(f"User: {message.content}".rstrip())
    if not messages or messages[-1].role != "assistant":
        paragraphs.append("Assistant:")
    return "\n\n".join(paragraphs)


def _check_stops(endpoint: Endpoint, params: DecodingParams) -> list[str]:
    stops = [s for s in params.stop if s]
    if len(stops) > MAX_STOP_SEQUENCES:
        raise make_error(endpoint, f"TGI accepts at most {MAX_STOP_SEQUENCES} stop strings; "
                                   f"this decoding preset has {len(stops)}.", retryable=False, code="validation")
    return stops


def _valid_top_p(top_p: float | None) -> bool:
    # TGI accepts 0 < top_p < 1 only; 1.0 means "off" to us, so it is simply not sent.
    return top_p is not None and 0.0 < top_p < 1.0


def generate_parameters(endpoint: Endpoint, params: DecodingParams) -> dict:
    """``parameters`` for /generate_stream, following TGI's validation rules (reference §1.2).

    Always sent explicitly: without a ``parameters`` key TGI samples at temperature 1.
    Greedy: ``do_sample: false`` and no temperature/top_p/top_k at all (any of them turns sampling
    back on, and temperature 0 is rejected). ``details: true`` makes the last event carry the
    finish reason and token counts.
    """
    parameters: dict = {
        "max_new_tokens": params.max_new_tokens,
        "details": True,
        "return_full_text": False,
        "stop": _check_stops(endpoint, params),
    }
    if is_greedy(params):
        parameters["do_sample"] = False
    else:
        parameters["do_sample"] = True
        if params.temperature is not None:
            parameters["temperature"] = params.temperature
        if _valid_top_p(params.top_p):
            parameters["top_p"] = params.top_p
        if params.top_k is not None and params.top_k > 0:
            parameters["top_k"] = params.top_k
        if params.seed is not None:
            parameters["seed"] = params.seed
    if params.repetition_penalty is not None and params.repetition_penalty > 0:
        parameters["repetition_penalty"] = params.repetition_penalty
    if endpoint.model_id and endpoint.model_id != SERVED_MODEL:
        # On TGI any other model name is a LoRA adapter id (the Messages API does the same).
        parameters["adapter_id"] = endpoint.model_id
    return parameters


def chat_body(endpoint: Endpoint, messages: Sequence[Message], params: DecodingParams) -> dict:
    """Body for TGI's /v1/chat/completions.

    Greedy is ``temperature: 0`` here (this route accepts it). ``presence_penalty`` is never sent:
    TGI maps it to ``repetition_penalty = presence_penalty + 2``. The Messages API has no
    ``top_k`` and no ``repetition_penalty`` field (unknown fields are ignored), so those two preset
    values only apply in completion mode on TGI.
    """
    body: dict = {
        "model": endpoint.model_id or SERVED_MODEL,
        "messages": chat_messages(messages),
        "max_tokens": params.max_new_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    stops = _check_stops(endpoint, params)
    if stops:
        body["stop"] = stops
    if is_greedy(params):
        body["temperature"] = 0
    else:
        if params.temperature is not None:
            body["temperature"] = params.temperature
        if _valid_top_p(params.top_p):
            body["top_p"] = params.top_p
    if params.seed is not None:
        body["seed"] = params.seed
    return body


class GenerateStreamParser(StreamParser):
    """/generate_stream: one event per generated token, the last one with ``generated_text``.

    Special tokens (the end-of-sequence token on the last event) are not text: TGI leaves them
    out of ``generated_text`` and so do we. There is no ``[DONE]``; the stream simply ends after
    the last event. Errors arrive as a 200 event ``{"error", "error_type"}``.
    """

    def __init__(self, endpoint: Endpoint, params: DecodingParams) -> None:
        self.endpoint = endpoint
        self.clock = StreamClock()
        self.trimmer = StopTrimmer(params.stop)
        self.events = 0
        self.final: dict | None = None
        self.complete = False

    def start(self) -> float:
        return self.clock.start()

    def feed(self, line: bytes) -> list[StreamItem]:
        data = sse_payload(self.endpoint, line)
        if data is None:
            return []
        payload = parse_json_line(self.endpoint, data)
        if "error" in payload:
            raise error_in_stream(self.endpoint, payload)
        token = payload.get("token")
        if not isinstance(token, dict):
            raise protocol_error(self.endpoint, f"an event without a token: {data[:120]!r}")
        text = "" if token.get("special") else str(token.get("text") or "")
        self.clock.event(visible=bool(text))
        self.events += 1
        items: list[StreamItem] = []
        if text:
            ready = self.trimmer.feed(text)
            if ready:
                items.append(Delta(ready))
        if payload.get("generated_text") is not None:
            self.final = payload
            self.complete = True
        return items

    def end(self) -> list[StreamItem]:
        if self.final is None:
            raise incomplete_error(self.endpoint, "ended the stream before the last token")
        details = self.final.get("details") or {}
        reason = normalise_finish(details.get("finish_reason"))
        rest = self.trimmer.finish(may_end_with_stop=reason != "length")
        output_tokens = as_int(details.get("generated_tokens"))
        finish = self.clock.finish(reason, as_int(details.get("input_length")),
                                   output_tokens if output_tokens is not None else self.events)
        return [Delta(rest), finish] if rest else [finish]


class TGIAdapter(BackendAdapter):
    kind = "tgi"

    def request_for(self, endpoint: Endpoint, messages: Sequence[Message], params: DecodingParams) -> tuple[str, dict]:
        """The (path, JSON body) this adapter sends for a generation."""
        if endpoint.api == "completion":
            return "/generate_stream", {"inputs": render_prompt(messages),
                                        "parameters": generate_parameters(endpoint, params)}
        return "/v1/chat/completions", chat_body(endpoint, messages, params)

    def open_stream(self, endpoint: Endpoint, messages: Sequence[Message],
                    params: DecodingParams) -> tuple[str, dict, StreamParser]:
        path, body = self.request_for(endpoint, messages, params)
        if endpoint.api == "completion":
            return path, body, GenerateStreamParser(endpoint, params)
        return path, body, ChatCompletionsParser(endpoint, stops=params.stop, every_chunk_is_a_token=True)

    def health(self, endpoint: Endpoint) -> None:
        # 200 with an empty body when the shards answer; 503 {"error": "unhealthy"} otherwise.
        request_json(endpoint, "GET", "/health")

    def discover(self, endpoint: Endpoint) -> list[DiscoveredModel]:
        """TGI serves one model; /info names it. ``max_total_tokens`` (prompt + answer) is its context length.

        /info changed fields across versions (2.0.x had ``max_input_length``), so it is read loosely.
        """
        info = request_json(endpoint, "GET", "/info")
        if not isinstance(info, dict) or not info.get("model_id"):
            raise protocol_error(endpoint, "/info did not name a model")
        return [DiscoveredModel(model_id=str(info["model_id"]), context_length=as_int(info.get("max_total_tokens")))]


ADAPTER = TGIAdapter()
