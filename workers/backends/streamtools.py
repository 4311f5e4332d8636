"""Pieces every adapter needs: timing (reference §5), stop-string trimming, finish reasons."""
from __future__ import annotations

import time

from workers.backends.base import DecodingParams, Endpoint, Finish
from workers.backends.transport import make_error


class StreamClock:
    """Client-side timing of one streamed generation, with a monotonic clock.

    * t0: just before the request is sent (``start``).
    * t_first: arrival of the first event that carries visible generated text.
    * t_last: arrival of the final token event (the caller says which event that is).

    TTFT = t_first - t0; TPOT = (t_last - t_first) / (N - 1) with N the server's output token
    count (chunks are not tokens on every server); total = t0 to the end of the stream.
    """

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.t_first: float | None = None
        self.t_last: float | None = None

    def start(self) -> float:
        self.t0 = time.perf_counter()
        return self.t0

    def event(self, *, visible: bool) -> float:
        """Record a token event's arrival; returns its time."""
        now = time.perf_counter()
        if visible and self.t_first is None:
            self.t_first = now
        self.t_last = now
        return now

    def finish(self, finish_reason: str, input_tokens: int | None, output_tokens: int | None) -> Finish:
        end = time.perf_counter()
        ttft_ms = (self.t_first - self.t0) * 1000.0 if self.t_first is not None else None
        tpot_ms = None
        if self.t_first is not None and self.t_last is not None and output_tokens and output_tokens > 1:
            tpot_ms = (self.t_last - self.t_first) * 1000.0 / (output_tokens - 1)
        return Finish(finish_reason=finish_reason, input_tokens=input_tokens, output_tokens=output_tokens,
                      ttft_ms=ttft_ms, tpot_ms=tpot_ms, total_ms=(end - self.t0) * 1000.0)


class StopTrimmer:
    """Hold back text that may be the start of a stop string, and drop a stop string that ended the answer.

    TGI keeps the stop string that ended generation in its output; Ollama, vLLM and OpenAI drop
    it. So that every contender's answer reads the same way, we never emit a possible stop-string
    prefix until the next token shows it was not one, and at the end cut the stop string off.
    A stop string can only ever sit at the very end of the text (generation stops on it).
    """

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> str:
        """Return the part of the text so far that is safe to show now."""
        if not self.stops:
            return text
        self.pending += text
        keep = self._held_suffix_length(self.pending)
        ready, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep:]
        return ready

    def finish(self, *, may_end_with_stop: bool) -> str:
        """The held-back rest; without the stop string if the answer ended on one."""
        rest, self.pending = self.pending, ""
        if may_end_with_stop:
            for stop in sorted(self.stops, key=len, reverse=True):
                if rest.endswith(stop):
                    return rest[: len(rest) - len(stop)]
        return rest

    def _held_suffix_length(self, text: str) -> int:
        longest = 0
        for stop in self.stops:
            # The longest suffix of text that is a prefix of (or equal to) this stop string.
            for size in range(min(len(stop), len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest


def normalise_finish(reason: str | None) -> str:
    """Our two finish reasons: "length" when the token limit cut the answer, else "stop"."""
    if reason in ("length", "max_tokens", "model_length"):
        return "length"
    return "stop"


def is_greedy(params: DecodingParams) -> bool:
    # A temperature of 0 (or below) means greedy decoding everywhere; only TGI's /generate refuses it.
    return params.greedy or (params.temperature is not None and params.temperature <= 0)


def require_model(endpoint: Endpoint) -> None:
    if not endpoint.model_id:
        raise make_error(endpoint, f"No model name is set for this {endpoint.kind} endpoint.",
                         retryable=False, code="validation")


def require_chat_api(endpoint: Endpoint) -> None:
    if endpoint.api != "chat":
        raise make_error(endpoint, "Raw-prompt (completion) mode is only available on TGI servers.",
                         retryable=False, code="validation")


def as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None

