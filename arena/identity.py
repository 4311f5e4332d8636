"""Find contender names in model output (pure: plain strings in, plain strings out).

A model that says "As Llama, made by Meta AI, ..." tells the rater who it is before the vote.
The battle is kept, but flagged so admins can judge whether its vote should count.

Matching rules:
* case-insensitive, whitespace inside a name matches any run of whitespace;
* whole words only: a name is not found inside a longer word ("Llama" is not in "Llamas", "Yi" is
  not in "yield"), and a version is not found inside a longer version ("gpt-3" is not in "gpt-3.5");
* names with fewer than ``MIN_NAME_CHARS`` letters or digits are ignored: a one-letter name or
  organisation ("X") would flag nearly every answer.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

MIN_NAME_CHARS = 2


def _significant(name: str) -> bool:
    return sum(ch.isalnum() for ch in name) >= MIN_NAME_CHARS


def _name_regex(name: str) -> str:
    body = r"\s+".join(re.escape(part) for part in name.split())
    # Boundaries only where the name itself starts or ends with a word character: "C++" ends in
    # punctuation, so "C++," still counts. After the name, "." or "," followed by a digit continues
    # a version number ("gpt-3" must not match "gpt-3.5").
    start = r"(?<!\w)" if re.match(r"\w", name) else ""
    end = r"(?!\w|[.,]\d)" if re.search(r"\w$", name) else ""
    return f"{start}{body}{end}"


def compile_names(names: Iterable[str]) -> re.Pattern[str] | None:
    """One pattern for all names (longest first, so the fullest name is the one reported)."""
    cleaned = sorted({" ".join(n.split()) for n in names if isinstance(n, str) and _significant(n)},
                     key=lambda n: (-len(n), n.lower()))
    if not cleaned:
        return None
    return re.compile("|".join(f"(?:{_name_regex(n)})" for n in cleaned), re.IGNORECASE)


def names_mentioned(text: str, names: Iterable[str]) -> list[str]:
    """The distinct names found in ``text``, as written there, in order of first appearance."""
    pattern = compile_names(names)
    if pattern is None or not text:
        return []
    found: list[str] = []
    seen: set[str] = set()
    for match in pattern.finditer(text):
        key = " ".join(match.group(0).lower().split())
        if key not in seen:
            seen.add(key)
            found.append(match.group(0))
    return found


def identity_names(*, display_name: str, organisation: str = "", aliases: Iterable[str] = ()) -> list[str]:
    """The names one contender could give itself away by."""
    return [n for n in (display_name, organisation, *aliases) if isinstance(n, str) and n.strip()]
