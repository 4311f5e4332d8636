"""The one interface every model-backend adapter implements.

Adapters know nothing of the ORM: they take plain values (an :class:`Endpoint`, the
conversation as :class:`Message` items and our :class:`DecodingParams`) and yield text
:class:`Delta` items followed by exactly one :class:`Finish`. Every failure is a
:class:`BackendError` that says whether a retry could help.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field

KINDS = ("tgi", "ollama", "openai")
# "chat": the server applies the model's chat template (TGI Messages API, Ollama /api/chat,
# OpenAI chat completions). "completion": we render the prompt ourselves and use the raw route
# (TGI /generate_stream); for base models without a chat template.
API_MODES = ("chat", "completion")


@dataclass(frozen=True)
class Endpoint:
    kind: str
    base_url: str
    model_id: str
    auth_token: str = field(default="", repr=False)
    api: str = "chat"
    connect_timeout_s: float = 5.0
    # No byte from the server for this long mid-request: a stall (retryable).
    stall_timeout_s: float = 30.0
    # Whole request, headers to last byte.
    deadline_s: float = 300.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown backend kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.api not in API_MODES:
            raise ValueError(f"unknown api mode {self.api!r}; expected one of {', '.join(API_MODES)}")


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class DecodingParams:
    """Our decoding parameters; each adapter maps them to its server's rules."""

    greedy: bool = False
    temperature: float | None = 0.7
    top_p: float | None = None
    top_k: int | None = None
    max_new_tokens: int = 512
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {
            "greedy": self.greedy,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
            "stop": list(self.stop),
        }


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finish:
    # Normalised: "stop" (end of sequence or a stop string) or "length".
    finish_reason: str
    input_tokens: int | None
    output_tokens: int | None
    # Measured around the HTTP call with a monotonic clock (see reference §5).
    ttft_ms: float | None
    tpot_ms: float | None
    total_ms: float | None = None


StreamItem = Delta | Finish


class BackendError(Exception):
    """A failed generation. ``retryable`` says whether trying again could help."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        # Short machine-readable cause: "refused", "timeout", "stall", "deadline", "overloaded",
        # "validation", "auth", "not_found", "template", "generation", "protocol", "server".
        self.code = code

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class DiscoveredModel:
    model_id: str
    context_length: int | None = None
    parameter_size: str = ""
    family: str = ""


class StreamParser(ABC):
    """One response's stream, read line by line: ``feed`` every line, then ``end``.

    Pure parsing: the readers (``workers.backends.reading``) do the I/O, on a thread or in an
    event loop, and drive the same parser.
    """

    # The answer's end was read; the rest of the stream is drained (for keep-alive), not parsed.
    complete: bool = False

    @abstractmethod
    def start(self) -> float:
        """Called just before the request goes out; returns that moment (``time.perf_counter``)."""

    @abstractmethod
    def feed(self, line: bytes) -> list[StreamItem]:
        """The Delta items this line of the body gives (often none). Raise BackendError on a failure."""

    @abstractmethod
    def end(self) -> list[StreamItem]:
        """After the last line: any held-back text, then the Finish. Raise BackendError if the answer
        is incomplete."""


class BackendAdapter(ABC):
    kind: str

    @abstractmethod
    def open_stream(self, endpoint: Endpoint, messages: Sequence[Message],
                    params: DecodingParams) -> tuple[str, dict, StreamParser]:
        """(path, JSON body, parser) of a streamed generation. Raise BackendError if it cannot be asked."""

    def stream(
        self, endpoint: Endpoint, messages: Sequence[Message], params: DecodingParams
    ) -> Iterator[StreamItem]:
        """Yield Delta items, then exactly one Finish. Raise BackendError on any failure."""
        from workers.backends.reading import read_stream

        path, body, parser = self.open_stream(endpoint, messages, params)
        yield from read_stream(endpoint, path, body, parser)

    async def astream(
        self, endpoint: Endpoint, messages: Sequence[Message], params: DecodingParams
    ) -> AsyncIterator[list[StreamItem]]:
        """``stream`` in the running event loop: the items of each read of the body together."""
        from workers.backends.reading import aread_stream

        path, body, parser = self.open_stream(endpoint, messages, params)
        async for items in aread_stream(endpoint, path, body, parser):
            yield items

    @abstractmethod
    def health(self, endpoint: Endpoint) -> None:
        """Return if the server answers healthy; raise BackendError otherwise."""

    @abstractmethod
    def discover(self, endpoint: Endpoint) -> list[DiscoveredModel]:
        """List the models this server offers."""
