"""What an emulated model is and how it can misbehave."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

STYLES = ("terse", "markdown", "code")

# Faults that make the whole model's server misbehave, whatever the route.
SERVER_FAULTS = ("refuse", "slow_headers")
# Faults that answer a generation request with an error status before any output.
STATUS_FAULTS = ("401", "422", "429", "500")
# Faults that strike while output is being produced.
STREAM_FAULTS = ("error_mid_stream", "stall", "malformed_line")
FAULT_KINDS = SERVER_FAULTS + STATUS_FAULTS + STREAM_FAULTS


@dataclass(frozen=True)
class Fault:
    """A misbehaviour injected into one model's responses.

    ``kind``:
      * ``refuse``: read the request, then reset the TCP connection without sending a byte.
      * ``slow_headers``: wait ``delay_ms`` before the status line, then answer normally.
      * ``401`` / ``422`` / ``429`` / ``500``: answer a generation request with that kind of error, in
        each protocol's own shape. Where a protocol has no such status the nearest real one is sent:
        Ollama answers validation trouble with 400 and overload with 503 ``server busy``; vLLM answers
        validation trouble with 400. TGI's streaming routes answer 200 with an error event, as TGI does.
      * ``error_mid_stream``: send ``after_tokens`` tokens, then the protocol's mid-generation error.
      * ``stall``: send ``after_tokens`` tokens, then go silent with the connection open
        (for ``delay_ms`` if set, else until the client or the server gives up), then drop it.
      * ``malformed_line``: send ``after_tokens`` tokens, then a line that is not valid JSON, then end.
    """

    kind: str
    after_tokens: int = 0
    delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if self.after_tokens < 0 or self.delay_ms < 0:
            raise ValueError("after_tokens and delay_ms must not be negative")

    @classmethod
    def from_dict(cls, data: dict) -> Fault:
        return cls(kind=str(data["kind"]), after_tokens=int(data.get("after_tokens", 0)),
                   delay_ms=float(data.get("delay_ms", 0.0)))


@dataclass(frozen=True)
class EmulatedModel:
    """One fake model. Its output is a deterministic function of (seed, request seed, prompt).

    ``max_tokens`` is the natural length of an answer: a request allowing more ends on
    end-of-sequence after that many tokens; a request allowing fewer ends on "length".
    ``load_ms`` is an extra cold-start delay, reported by Ollama as ``load_duration``, on the
    model's first Ollama request (and the first after an unload with ``keep_alive: 0``).
    """

    name: str
    style: str = "terse"
    ttft_ms: float = 40.0
    tokens_per_second: float = 150.0
    max_tokens: int = 48
    seed: int = 0
    fault: Fault | None = None
    context_length: int = 4096
    parameter_size: str = "7B"
    family: str = "demo"
    load_ms: float = 0.0

    def __post_init__(self) -> None:
        if not self.name or any(ch.isspace() for ch in self.name):
            raise ValueError(f"model name must be non-empty without whitespace, got {self.name!r}")
        if self.style not in STYLES:
            raise ValueError(f"unknown style {self.style!r}; expected one of {', '.join(STYLES)}")
        if self.tokens_per_second <= 0 or self.ttft_ms < 0 or self.load_ms < 0:
            raise ValueError("tokens_per_second must be positive and delays not negative")
        if self.max_tokens < 1 or self.context_length < 16:
            raise ValueError("max_tokens must be at least 1 and context_length at least 16")
        if isinstance(self.fault, dict):
            object.__setattr__(self, "fault", Fault.from_dict(self.fault))

    @classmethod
    def from_dict(cls, data: dict) -> EmulatedModel:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model field(s): {', '.join(sorted(unknown))}")
        values = dict(data)
        if values.get("fault") is not None:
            values["fault"] = Fault.from_dict(values["fault"])
        return cls(**values)

    def as_dict(self) -> dict:
        return asdict(self)


# Demo models; the names say they are demos. Speeds are chosen so a human can watch them type.
DEMO_MODELS: tuple[EmulatedModel, ...] = (
    EmulatedModel(name="demo-terse-7b", style="terse", ttft_ms=40, tokens_per_second=150.0, max_tokens=48,
                  seed=0, context_length=4096, parameter_size="7B", family="demo"),
    EmulatedModel(name="demo-markdown-13b", style="markdown", ttft_ms=80, tokens_per_second=120.0,
                  max_tokens=120, seed=1, context_length=8192, parameter_size="13B", family="demo"),
    EmulatedModel(name="demo-coder-34b", style="code", ttft_ms=120, tokens_per_second=90.0, max_tokens=140,
                  seed=2, context_length=16384, parameter_size="34B", family="demo"),
)
