"""Reading an OpenAI-style chat-completions SSE stream (TGI's Messages API, vLLM, Ollama /v1)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

from workers.backends.base import BackendError, Delta, Endpoint, Message, StreamItem
from workers.backends.sse import DONE, sse_data
from workers.backends.streamtools import StopTrimmer, StreamClock, as_int, normalise_finish
from workers.backends.transport import error_in_stream, incomplete_error, parse_json_line, stream_lines


def chat_messages(messages: Sequence[Message]) -> list[dict]:
    return [{"role": m.role, "content": m.content} for m in messages]


def stream_chat_completions(endpoint: Endpoint, path: str, body: dict, *, stops: Sequence[str] = (),
                            every_chunk_is_a_token: bool = False) -> Iterator[StreamItem]:
    """Yield Delta items, then one Finish, from a streaming chat-completions request.

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
    clock = StreamClock()
    trimmer = StopTrimmer(tuple(stops))
    finish_reason: str | None = None
    usage: dict | None = None
    token_chunks = 0
    text_chunks = 0
    done = False
    try:
        for data in sse_data(endpoint, stream_lines(endpoint, path, body, start_clock=clock.start)):
            if done:
                continue  # Read to the end so the connection can go back to the pool.
            if data.strip() == DONE:
                done = True
                continue
            payload = parse_json_line(endpoint, data)
            if "error" in payload or payload.get("object") == "error":
                raise error_in_stream(endpoint, payload)
            if isinstance(payload.get("usage"), dict):
                usage = payload["usage"]
            for choice in payload.get("choices") or ():
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                text = delta.get("content") or ""
                clock.event(visible=bool(text))
                token_chunks += 1
                if text:
                    text_chunks += 1
                    ready = trimmer.feed(text)
                    if ready:
                        yield Delta(ready)
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
    except BackendError:
        if not done:
            raise
        # The answer was complete ([DONE] seen); a failure while draining the rest does not matter.
    if not done:
        raise incomplete_error(endpoint, "ended the stream without [DONE]")
    reason = normalise_finish(finish_reason)
    rest = trimmer.finish(may_end_with_stop=reason != "length")
    if rest:
        yield Delta(rest)
    output_tokens = as_int((usage or {}).get("completion_tokens"))
    if output_tokens is None:
        output_tokens = token_chunks if every_chunk_is_a_token else text_chunks
    yield clock.finish(reason, as_int((usage or {}).get("prompt_tokens")), output_tokens)
