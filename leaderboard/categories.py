"""Leaderboard categories and the small heuristics that assign battles to them. Pure Python.

A battle belongs to ``overall`` and to every category its prompts qualify for: its language
(``lang-xx``, detected from the first prompt), ``multi-turn`` (more than one turn),
``long-prompts`` (the rater's prompts total more than a set number of characters) and ``coding``
(detected from code fences and programming vocabulary). Each category is rated on its own.

Language detection is deliberately small: the writing system settles most languages (Han,
Hangul, Kana, Cyrillic, Arabic, Devanagari, ...); Latin-script prompts are told apart by their
most common short words. Too little signal gives "" (unknown), which joins no language category.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

OVERALL = "overall"
MULTI_TURN = "multi-turn"
LONG_PROMPTS = "long-prompts"
CODING = "coding"
LANGUAGE_PREFIX = "lang-"
FIXED_CATEGORIES = (OVERALL, MULTI_TURN, LONG_PROMPTS, CODING)

LANGUAGE_NAMES = {
    "en": "English", "de": "German", "fr": "French", "es": "Spanish", "pt": "Portuguese", "it": "Italian",
    "nl": "Dutch", "pl": "Polish", "tr": "Turkish", "sv": "Swedish", "vi": "Vietnamese", "id": "Indonesian",
    "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "ru": "Russian", "uk": "Ukrainian", "ar": "Arabic",
    "fa": "Persian", "he": "Hebrew", "hi": "Hindi", "bn": "Bengali", "el": "Greek", "th": "Thai",
}
_CODE_BY_NAME = {name.lower(): code for code, name in LANGUAGE_NAMES.items()}

# Stopwords: frequent short words that are rare in the other languages of the list.
_STOPWORDS = {
    "en": ("a an the and or is are was were be to of in on at for with that this it i you my me your we they he "
           "she what how why which who when where can could would should will do does did not please write tell "
           "give make explain about from as by if").split(),
    "de": ("der die das und ist nicht ich sie ein eine zu mit wie was für auf bitte warum oder auch du dir mir "
           "dich geht heute den dem im hat haben wir ihr kann").split(),
    "fr": "le la les et est une des du que qui pour dans pas vous je ce avec comment pourquoi sur".split(),
    "es": "el la los las y es una que del por para con cómo qué por favor se lo como pero más".split(),
    "pt": "o a os as e é um uma que do da não para com como por você em mais isso".split(),
    "it": "il lo la gli le e è un una che di per non con come sono perché questo della".split(),
    "nl": "de het een en is van ik je niet dat wat hoe voor met zijn op ook waarom".split(),
    "pl": "i w nie się na jest że to jak co do z czy dla proszę jestem".split(),
    "tr": "ve bir bu için ne nasıl mi mı da de ile çok ben sen neden".split(),
    "sv": "och är att det som en ett jag inte på för med hur vad varför".split(),
    "id": "dan yang di ini itu untuk dengan apa bagaimana tidak saya ada dari".split(),
}
_STOPWORD_SETS = {code: frozenset(words) for code, words in _STOPWORDS.items()}
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)
# Letters that only one of the Latin-script languages above uses.
_LATIN_MARKS = (
    # Matched against lower-cased text, without IGNORECASE: under it "i" would match Turkish "ı".
    ("vi", re.compile(r"[ăơưđạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ]")),
    ("pl", re.compile(r"[ąćęłńśźż]")),
    ("tr", re.compile(r"[ğış]")),
    ("de", re.compile(r"[ß]")),
)


def _script_of(char: str) -> str | None:
    code = ord(char)
    if 0x3040 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF:
        return "kana"
    if 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF:
        return "han"
    if 0xAC00 <= code <= 0xD7AF or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F:
        return "hangul"
    if 0x0400 <= code <= 0x04FF:
        return "cyrillic"
    if 0x0600 <= code <= 0x06FF or 0x0750 <= code <= 0x077F:
        return "arabic"
    if 0x0590 <= code <= 0x05FF:
        return "hebrew"
    if 0x0900 <= code <= 0x097F:
        return "devanagari"
    if 0x0980 <= code <= 0x09FF:
        return "bengali"
    if 0x0370 <= code <= 0x03FF:
        return "greek"
    if 0x0E00 <= code <= 0x0E7F:
        return "thai"
    if char.isalpha() and code < 0x0250:
        return "latin"
    return None


def detect_language(text: str) -> str:
    """ISO 639-1 code of the prompt's language, or "" when the text says too little."""
    counts: dict[str, int] = {}
    for char in text[:4000]:
        script = _script_of(char)
        if script:
            counts[script] = counts.get(script, 0) + 1
    if not counts:
        return ""
    letters = sum(counts.values())
    # Japanese mixes Kana with Han; a little Kana among Han is enough to tell it from Chinese.
    if counts.get("kana", 0) >= max(2, 0.05 * letters):
        return "ja"
    script, top = max(counts.items(), key=lambda item: item[1])
    if script == "latin" and counts.get("han", 0) >= 0.2 * letters:
        script = "han"  # Chinese prompts often carry Latin code or names; Han still decides
    if script == "han":
        return "zh"
    if script == "hangul":
        return "ko"
    if script == "cyrillic":
        return "uk" if re.search(r"[іїєґ]", text, re.I) else "ru"
    if script == "arabic":
        return "fa" if re.search(r"[پچژگ]", text) else "ar"
    simple = {"hebrew": "he", "devanagari": "hi", "bengali": "bn", "greek": "el", "thai": "th"}
    if script in simple:
        return simple[script]
    return _latin_language(text)


def _latin_language(text: str) -> str:
    lowered = text[:4000].lower()
    for code, pattern in _LATIN_MARKS:
        if len(pattern.findall(lowered)) >= 2:
            return code
    words = _WORD.findall(lowered)
    if not words:
        return ""
    scores = {code: sum(word in stopwords for word in words) for code, stopwords in _STOPWORD_SETS.items()}
    best = max(scores.values())
    if best == 0:
        # A few words with no common word at all (a name, a code identifier): not enough to say.
        return "en" if len(words) >= 4 and all(ord(c) < 128 for c in "".join(words)) else ""
    leaders = [code for code, score in scores.items() if score == best]
    # Ties between languages sharing short words ("de", "la") fall back to English only when
    # English is among them; otherwise the prompt is too short to tell.
    if len(leaders) == 1:
        return leaders[0]
    return "en" if "en" in leaders else ""


def language_code(value: str) -> str:
    """A language given as a code ("en") or a name ("English", as in FastChat exports) -> code."""
    value = (value or "").strip()
    if not value:
        return ""
    lowered = value.lower()
    if lowered in {"unknown", "und", "other"}:
        return ""
    if lowered in LANGUAGE_NAMES:
        return lowered
    if lowered in _CODE_BY_NAME:
        return _CODE_BY_NAME[lowered]
    # Unknown names are kept, reduced to a safe slug, so they still form their own category.
    slug = re.sub(r"[^a-z0-9]+", "-", unicodedata.normalize("NFKD", lowered).encode("ascii", "ignore").decode())
    return slug.strip("-")[:16]


_FENCE = re.compile(r"```|~~~")
_CODE_LINES = re.compile(
    r"^\s*(?:def |class |import |from \S+ import |#include|public |private |func |fn |let |const |var |"
    r"function\b|SELECT\b|INSERT\b|UPDATE\b|CREATE TABLE|return\b|if\s*\(|for\s*\(|while\s*\(|\}|<\?php|"
    r"package |using |console\.log|print\(|[\w.]+(?:\[[^\]]*\])?\s*=\s*[\[{(\"'\d])", re.M | re.I,
)
_CODE_SYMBOLS = re.compile(r"[;{}]\s*$|;\s*\w|=>|->|::|\w\([^()\n]*\)|==|!=|&&|\|\||\+=", re.M)
# Names that almost only occur when talking about programming: one is enough.
_CODE_NAMES = re.compile(
    r"(?<![\w+#])(?:python|javascript|typescript|golang|kotlin|php|c\+\+|c#|sql|bash|powershell|html|css|regex|"
    r"regular expression|json|yaml|leetcode|pandas|numpy|django|flask|docker|kubernetes|git|stack trace|"
    r"traceback|segfault|compiler|recursion|unit tests?|refactor)(?![\w+#])", re.I,
)
# Words that also have everyday meanings: two are needed, or one with code-like symbols.
_CODE_WORDS = re.compile(
    r"\b(?:code|coding|program|programming|script|function|method|algorithm|debug|bug|exception|variable|api|"
    r"query|array|dict|dictionary|string|integer|loop|class|snippet|compile|database|java|rust|ruby|react|"
    r"library|framework|syntax|error)\b", re.I,
)


def is_coding_prompt(text: str) -> bool:
    """True when a prompt asks about or contains code.

    A code fence or a programming-only name decides on its own; otherwise it takes code-looking
    lines, or programming vocabulary together with code symbols, or plenty of programming vocabulary.
    """
    if _FENCE.search(text) or _CODE_NAMES.search(text):
        return True
    code_lines = len(_CODE_LINES.findall(text))
    symbols = len(_CODE_SYMBOLS.findall(text))
    words = len(_CODE_WORDS.findall(text))
    if code_lines >= 2 or (code_lines >= 1 and symbols >= 1):
        return True
    if words >= 1 and symbols >= 1:
        return True
    return words >= 2


def prompt_hash(text: str) -> str:
    """Digest of a prompt up to case and spacing, for de-duplicating repeated prompts."""
    normalised = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PromptTags:
    language: str  # ISO code or "" (unknown)
    is_coding: bool
    prompt_chars: int  # characters over all of the rater's prompts
    turns: int
    prompt_hash: str  # of the first prompt


def tag_prompts(prompts: list[str], *, language: str = "") -> PromptTags:
    """Tags of a battle from its prompts in turn order; ``language`` overrides the detection."""
    first = prompts[0] if prompts else ""
    return PromptTags(
        language=language_code(language) if language else detect_language(first),
        is_coding=any(is_coding_prompt(prompt) for prompt in prompts),
        prompt_chars=sum(len(prompt) for prompt in prompts),
        turns=max(len(prompts), 1),
        prompt_hash=prompt_hash(first) if prompts else "",
    )


def categories_of(*, language: str, is_coding: bool, prompt_chars: int | None, turns: int,
                  long_prompt_chars: int) -> list[str]:
    """Every category a battle with these tags counts in (``overall`` first)."""
    categories = [OVERALL]
    if language:
        categories.append(LANGUAGE_PREFIX + language)
    if turns > 1:
        categories.append(MULTI_TURN)
    if prompt_chars is not None and prompt_chars > long_prompt_chars:
        categories.append(LONG_PROMPTS)
    if is_coding:
        categories.append(CODING)
    return categories


def category_label(category: str) -> str:
    if category.startswith(LANGUAGE_PREFIX):
        code = category[len(LANGUAGE_PREFIX):]
        return f"Language: {LANGUAGE_NAMES.get(code, code)}"
    return {OVERALL: "Overall", MULTI_TURN: "Multi-turn", LONG_PROMPTS: "Long prompts", CODING: "Coding"}.get(
        category, category)


def is_valid_category(category: str) -> bool:
    return category in FIXED_CATEGORIES or bool(re.fullmatch(r"lang-[a-z0-9-]{1,16}", category or ""))
