"""Reading an OpenAI-style chat-completions SSE stream (TGI's Messages API, vLLM, Ollama /v1)."""
from __future__ import annotations

from collections.abc import Sequence

from workers.backends.base import Delta, Endpoint, Message, StreamItem, StreamParser
from workers.backends.sse import DONE, sse_payload
from workers.backends.streamtools import StopTrimmer, StreamClock, as_int, normalise_finish
from workers.backends.transport import error_in_stream, incomplete_error, parse_json_line


def chat_messages(messages: Sequence[Message]) -> list[dict]:
    return [{"role": m.role, "content": m.content} for m in messages]


class ChatCompletionsParser(StreamParser):
    """A streaming chat-completions response, Delta items then one Finish.

    * Text is ``choices[0].delta.content``. A chunk with empty content (vLLM's role-only first
      chunk, TGI's end-of-sequence chunk) is not visible text, so it does not start the TTFT clock.
    * Token counts come from the final ``usage`` chunk (``stream_options.include_usage``). Without
      it we count chunks: on TGI every chunk is exactly one generated token, special tokens
      included (``every_chunk_is_a_token``); elsewhere we count chunks that carried text.
    * ``data: [DONE]`` must arrive: a stream that ends without it lost its end (Ollama's /v1 layer,
      for instance, turns a runner error into an early end of stream), which is an error.
    * Error objects in the stream (``{"error": {...}}`` or vLLM's flat ``{"object": "error"}``)
      raise the matching BackendError.
    """

    def __init__(self, endpoint: Endpoint, *, stops: Sequence[str] = (), every_chunk_is_a_token: bool = False) -> None:
        self.endpoint = endpoint
        self.clock = StreamClock()
        self.trimmer = StopTrimmer(tuple(stops))
        self.every_chunk_is_a_token = every_chunk_is_a_token
        self.finish_reason: str | None = None
        self.usage: dict | None = None
        self.token_chunks = 0
        self.text_chunks = 0
        self.complete = False

    def start(self) -> float:
        return self.clock.start()

    def feed(self, line: bytes) -> list[StreamItem]:
        data = sse_payload(self.endpoint, line)
        if data is None:
            return []
        if data.strip() == DONE:
            self.complete = True
            return []
        payload = parse_json_line(self.endpoint, data)
        if "error" in payload or payload.get("object") == "error":
            raise error_in_stream(self.endpoint, payload)
        if isinstance(payload.get("usage"), dict):
            self.usage = payload["usage"]
        items: list[StreamItem] = []
        for choice in payload.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content") or ""
            self.clock.event(visible=bool(text))
            self.token_chunks += 1
            if text:
                self.text_chunks += 1
                ready = self.trimmer.feed(text)
                if ready:
                    items.append(Delta(ready))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return items

    def end(self) -> list[StreamItem]:
        if not self.complete:
            raise incomplete_error(self.endpoint, "ended the stream without [DONE]")
        reason = normalise_finish(self.finish_reason)
        rest = self.trimmer.finish(may_end_with_stop=reason != "length")
        usage = self.usage or {}
        output_tokens = as_int(usage.get("completion_tokens"))
        if output_tokens is None:
            output_tokens = self.token_chunks if self.every_chunk_is_a_token else self.text_chunks
        finish = self.clock.finish(reason, as_int(usage.get("prompt_tokens")), output_tokens)
        return [Delta(rest), finish] if rest else [finish]
