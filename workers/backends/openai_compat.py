"""OpenAI-compatible chat completions (vLLM, TGI's and Ollama's /v1 layers), streamed over httpx.

The ``openai`` SDK would work, but it brings its own retry loop and timeout model; the shared
transport keeps the stall, deadline and error rules identical to the other adapters.
"""
from __future__ import annotations

from collections.abc import Sequence

from workers.backends.base import (
    BackendAdapter,
    DecodingParams,
    DiscoveredModel,
    Endpoint,
    Message,
    StreamParser,
)
from workers.backends.chat_stream import ChatCompletionsParser, chat_messages
from workers.backends.streamtools import as_int, is_greedy, require_chat_api, require_model
from workers.backends.transport import protocol_error, request_json


def api_path(endpoint: Endpoint, path: str) -> str:
    """``/v1`` + path, whether or not the configured base URL already ends in /v1."""
    return path if endpoint.base_url.rstrip("/").endswith("/v1") else "/v1" + path


def chat_body(endpoint: Endpoint, messages: Sequence[Message], params: DecodingParams) -> dict:
    """The chat-completions body.

    ``top_p`` of 1.0 or more means "off" and is not sent (TGI's /v1 rejects 1.0). ``top_k`` and
    ``repetition_penalty`` are not OpenAI fields; vLLM accepts them, TGI and Ollama ignore
    unknown fields, so they are sent only when the preset sets them.
    """
    body: dict = {
        "model": endpoint.model_id,
        "messages": chat_messages(messages),
        "max_tokens": params.max_new_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if is_greedy(params):
        body["temperature"] = 0
    else:
        if params.temperature is not None:
            body["temperature"] = params.temperature
        if params.top_p is not None and 0.0 < params.top_p < 1.0:
            body["top_p"] = params.top_p
        if params.top_k is not None and params.top_k > 0:
            body["top_k"] = params.top_k
    if params.seed is not None:
        body["seed"] = params.seed
    if params.repetition_penalty is not None and params.repetition_penalty > 0:
        body["repetition_penalty"] = params.repetition_penalty
    stops = [s for s in params.stop if s]
    if stops:
        body["stop"] = stops
    return body


class OpenAICompatAdapter(BackendAdapter):
    kind = "openai"

    def request_for(self, endpoint: Endpoint, messages: Sequence[Message], params: DecodingParams) -> tuple[str, dict]:
        return api_path(endpoint, "/chat/completions"), chat_body(endpoint, messages, params)

    def open_stream(self, endpoint: Endpoint, messages: Sequence[Message],
                    params: DecodingParams) -> tuple[str, dict, StreamParser]:
        require_chat_api(endpoint)
        require_model(endpoint)
        path, body = self.request_for(endpoint, messages, params)
        # Stop strings are normally dropped by the server; trimming also covers TGI's /v1, which keeps them.
        return path, body, ChatCompletionsParser(endpoint, stops=params.stop)

    def health(self, endpoint: Endpoint) -> None:
        # /v1/models needs the bearer token on vLLM, so this also checks the credentials.
        listing = request_json(endpoint, "GET", api_path(endpoint, "/models"))
        if not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
            raise protocol_error(endpoint, "/v1/models did not return a model list")

    def discover(self, endpoint: Endpoint) -> list[DiscoveredModel]:
        """Models from /v1/models; vLLM adds ``max_model_len``, which is the context length."""
        listing = request_json(endpoint, "GET", api_path(endpoint, "/models"))
        if not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
            raise protocol_error(endpoint, "/v1/models did not return a model list")
        found = []
        for entry in listing["data"]:
            if isinstance(entry, dict) and entry.get("id"):
                context_length = as_int(entry.get("max_model_len")) or as_int(entry.get("context_length"))
                found.append(DiscoveredModel(model_id=str(entry["id"]), context_length=context_length))
        return found


ADAPTER = OpenAICompatAdapter()
