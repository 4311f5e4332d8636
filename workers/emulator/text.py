"""Deterministic fake model output: text in a given style, split into tokens the way real tokenizers do.

Everything here is a pure function of (model seed, request seed, prompt), so tests can assert exact
output, and a shorter length limit always yields a prefix of a longer one.
"""
from __future__ import annotations

import hashlib
import random
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

from .config import EmulatedModel

# Word-ish pieces with the leading space attached, as byte-level BPE tokenizers split text:
# contractions, letter runs, up to three digits, punctuation runs, then whitespace.
TOKEN_PATTERN = re.compile(r"'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d{1,3}| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")

EOS_ID = 2
EOS_TEXT = "</s>"
BOS_ID = 1
BOS_TEXT = "<s>"
VOCAB_SIZE = 32000


def tokenize(text: str) -> list[str]:
    return TOKEN_PATTERN.findall(text)


def token_id(piece: str) -> int:
    """A stable fake vocabulary id; ids below 100 are left for special tokens."""
    return 100 + zlib.crc32(piece.encode("utf-8")) % (VOCAB_SIZE - 100)


def count_tokens(text: str) -> int:
    return len(tokenize(text))


@dataclass(frozen=True)
class Token:
    id: int
    text: str
    logprob: float
    special: bool = False


@dataclass(frozen=True)
class Generation:
    """One request's output, before any protocol formats it.

    ``tokens`` includes a final special end-of-sequence token when ``finish`` is "eos".
    ``text`` is every non-special token's text (a stop string, if one ended generation, is in it);
    ``text_before_stop`` is cut where the stop string begins, for servers that strip it.
    """

    tokens: tuple[Token, ...]
    finish: str  # "eos" | "length" | "stop"
    stop_sequence: str | None
    text: str
    text_before_stop: str
    prompt_tokens: int
    seed: int | None  # the sampling seed used, None when decoding greedily

    @property
    def generated_tokens(self) -> int:
        return len(self.tokens)

    @property
    def visible_tokens(self) -> int:
        return sum(1 for token in self.tokens if not token.special)

    def pieces(self, *, strip_stop: bool) -> list[str]:
        """Text each token contributes, in order; special tokens contribute ""."""
        limit = len(self.text_before_stop) if strip_stop else len(self.text)
        out: list[str] = []
        position = 0
        for token in self.tokens:
            if token.special:
                out.append("")
                continue
            start, position = position, position + len(token.text)
            out.append(self.text[min(start, limit):min(position, limit)])
        return out


# ---------------------------------------------------------------- content by style

OPENERS = ["In short,", "Briefly,", "Simply put,", "Put plainly,", "The short answer:", "Mostly,"]
VERBS = ["depends on", "comes down to", "relies on", "benefits from", "is shaped by", "starts with",
         "works best with", "needs"]
OBJECTS = ["careful measurement", "clear goals", "a few simple rules", "good defaults", "steady practice",
           "the surrounding context", "the underlying data", "honest trade-offs", "small experiments",
           "patience", "a second opinion", "consistent habits"]
FOLLOW_UPS = ["Keep it simple.", "That is the gist.", "Start small and adjust.", "Measure before you change it.",
              "Details vary by case.", "Most of the rest is noise.", "Test it once more."]
HEADINGS = ["Overview", "Key points", "How it works", "Practical tips", "Common pitfalls", "Summary",
            "Step by step", "Why it matters"]
TERMS = ["Speed", "Clarity", "Cost", "Safety", "Scale", "Quality", "Context", "Timing", "Balance"]
PHRASES = ["matters more than it first seems", "is easy to overlook", "should be checked early",
           "grows with the size of the problem", "is best kept explicit", "pays off over time",
           "depends on your constraints"]
FUNCTION_NAMES = ["summarize", "normalize", "count_items", "parse_line", "merge", "score", "clean_text"]
ARGUMENTS = ["items", "text", "values", "records", "line", "data"]
EXPLANATIONS = ["The function returns early on empty input.", "It runs in linear time.",
                "Adjust the threshold to taste.", "Each step is easy to test on its own.",
                "No external packages are needed."]
FILLER = [" That", " is", " all", " for", " now", " and", " it", " should", " help", " in", " most", " cases"]
STOPWORDS = {"what", "which", "when", "where", "why", "how", "the", "this", "that", "with", "from", "your", "about",
             "please", "could", "would", "should", "tell", "explain", "give", "write", "into", "have", "does",
             "some", "sentence", "short", "there", "their", "they", "them", "then", "than", "also", "just", "are",
             "and", "for", "you", "can", "its", "was", "who", "not", "say", "hello", "one", "any", "all"}


def topic_of(text: str) -> str:
    """A word from the prompt to talk about, so answers visibly relate to the question."""
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z'-]{2,}", text) if w.lower() not in STOPWORDS]
    return words[-1].lower() if words else "this"


def sentence(rng: random.Random, topic: str) -> str:
    if rng.random() < 0.5:
        return f"{rng.choice(OPENERS)} {topic} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
    return rng.choice(FOLLOW_UPS)


def terse_unit(rng: random.Random, topic: str, first: bool, budget: int) -> str:
    return ("" if first else " ") + sentence(rng, topic)


def markdown_unit(rng: random.Random, topic: str, first: bool, budget: int) -> str:
    if first:
        return f"## {rng.choice(HEADINGS)}: {topic}\n\n{sentence(rng, topic)}"
    roll = rng.random()
    if roll < 0.2:
        return f"\n\n### {rng.choice(HEADINGS)}\n\n- **{rng.choice(TERMS)}**: {topic} {rng.choice(PHRASES)}."
    if roll < 0.7:
        return f"\n- **{rng.choice(TERMS)}**: {topic} {rng.choice(PHRASES)}."
    if roll < 0.85:
        return f"\n{rng.randint(1, 9)}. {rng.choice(VERBS).capitalize()} {rng.choice(OBJECTS)}."
    return f"\n\n> {rng.choice(FOLLOW_UPS)}"


def code_block(rng: random.Random, budget: int) -> str | None:
    """A complete fenced block of at most ``budget`` tokens, or None if not even a tiny one fits."""
    name, arg = rng.choice(FUNCTION_NAMES), rng.choice(ARGUMENTS)
    head = f"\n\n```python\ndef {name}({arg}):"
    tail = "\n```\n"
    body = [f"\n    if not {arg}:\n        return []", "\n    # keep the order stable",
            f"\n    result = [x for x in {arg} if x]", "\n    result.sort(key=str)"]
    chosen = sorted(rng.sample(range(len(body)), k=rng.randint(1, len(body))))
    lines: list[str] = []
    for index in chosen:
        candidate = lines + [body[index]]
        ending = "\n    return result" if any("result =" in line for line in candidate) else f"\n    return {arg}"
        if count_tokens(head + "".join(candidate) + ending + tail) <= budget:
            lines = candidate
    ending = "\n    return result" if any("result =" in line for line in lines) else f"\n    return {arg}"
    block = head + "".join(lines) + ending + tail
    return block if count_tokens(block) <= budget else None


def code_unit(rng: random.Random, topic: str, first: bool, budget: int) -> str | None:
    if first:
        return f"Here is a short Python sketch for {topic}:"
    if rng.random() < 0.45:
        block = code_block(rng, budget)
        if block is not None:
            return block
    return " " + rng.choice(EXPLANATIONS)


UNIT_BUILDERS = {"terse": terse_unit, "markdown": markdown_unit, "code": code_unit}


def filler(count: int) -> list[str]:
    """Exactly ``count`` tokens of closing prose, each word a single token."""
    if count <= 0:
        return []
    words = [FILLER[i % len(FILLER)] for i in range(count - 1)]
    return words + ["."]


@lru_cache(maxsize=512)
def natural_tokens(style: str, length: int, key: str, topic: str) -> tuple[str, ...]:
    """The model's full natural answer: exactly ``length`` token strings."""
    rng = random.Random(int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big"))
    build = UNIT_BUILDERS[style]
    tokens: list[str] = []
    first = True
    misses = 0
    while len(tokens) < length and misses < 6:
        unit = build(rng, topic, first, length - len(tokens))
        pieces = tokenize(unit) if unit else []
        if pieces and len(tokens) + len(pieces) <= length:
            tokens.extend(pieces)
            first = False
            misses = 0
        else:
            misses += 1
    tokens.extend(filler(length - len(tokens)))
    return tuple(tokens)


def generation_key(model: EmulatedModel, request_seed: int | None, prompt: str) -> str:
    return f"{model.seed}\x00{'greedy' if request_seed is None else request_seed}\x00{prompt}"


def derived_seed(model: EmulatedModel, prompt: str) -> int:
    """The seed a server "picks" when sampling without one; derived so it can be replayed."""
    digest = hashlib.sha256(f"{model.seed}\x01{prompt}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # fits i64 as well as u64


def logprob_for(rng: random.Random) -> float:
    value = -abs(rng.gauss(0.0, 0.9))
    return 0.0 if value > -1e-4 else float(f"{value:.7g}")


def generate(model: EmulatedModel, prompt: str, *, seed: int | None, limit: int | None,
             stops: list[str] | tuple[str, ...] = (), topic_text: str | None = None,
             prompt_tokens: int | None = None) -> Generation:
    """Run the fake model.

    ``seed`` is the sampling seed, or None for greedy decoding; ``limit`` is the most tokens the
    request allows (None: no limit). Stop strings are searched in the text as it grows; the token
    that completes one ends generation.
    """
    words = natural_tokens(model.style, model.max_tokens, generation_key(model, seed, prompt),
                           topic_of(topic_text if topic_text is not None else prompt))
    rng = random.Random(zlib.crc32(generation_key(model, seed, prompt).encode("utf-8")))
    tokens: list[Token] = []
    text = ""
    finish, hit, cut = "", None, -1
    stops = [s for s in stops if s]
    for piece in words:
        if limit is not None and len(tokens) >= limit:
            finish = "length"
            break
        before = len(text)
        text += piece
        tokens.append(Token(token_id(piece), piece, logprob_for(rng)))
        for stop in stops:
            found = text.find(stop, max(0, before - len(stop) + 1))
            if found != -1 and (cut == -1 or found < cut):
                hit, cut = stop, found
        if hit is not None:
            finish = "stop"
            break
    if not finish:
        if limit is not None and len(tokens) >= limit:
            finish = "length"
        else:
            finish = "eos"
            tokens.append(Token(EOS_ID, EOS_TEXT, float(f"{logprob_for(rng) / 10:.7g}") or -0.0003, special=True))
    return Generation(
        tokens=tuple(tokens), finish=finish, stop_sequence=hit, text=text,
        text_before_stop=text[:cut] if hit is not None else text,
        prompt_tokens=prompt_tokens if prompt_tokens is not None else count_tokens(prompt) + 1,
        seed=seed,
    )
