"""Finding contender names in answers: plain strings, no database."""
from __future__ import annotations

import pytest

from arena.identity import compile_names, identity_names, names_mentioned

NAMES = ["gpt-3.5", "Llama", "Meta AI", "Yi", "X", "C++", "Zephyr+", "Mistral 7B"]


@pytest.mark.parametrize("text, expected", [
    ("I am GPT-3.5, a language model.", ["GPT-3.5"]),
    ("As gpt-3.5-turbo I cannot browse.", ["gpt-3.5"]),
    ("I was trained by META AI.", ["META AI"]),
    ("I was trained by Meta\n  AI.", ["Meta\n  AI"]),
    ("(Llama) here", ["Llama"]),
    ("I'm Yi, from 01.AI.", ["Yi"]),
    ("Mistral 7B speaking", ["Mistral 7B"]),
    ("Made by Zephyr+, obviously.", ["Zephyr+"]),   # a name ending in punctuation
    ("Written in C++, obviously.", []),           # one letter (C) is too short to count
    ("llama and LLAMA again", ["llama"]),  # reported once, as first written
])
def test_names_are_found_case_insensitively_on_word_boundaries(text, expected):
    assert names_mentioned(text, NAMES) == expected


@pytest.mark.parametrize("text", [
    "Llamas live in the Andes.",        # a longer word
    "It will yield a result.",          # a short name inside a word
    "Try gpt-3.55 instead.",            # a longer version
    "The xylophone, x marks the spot",  # one-letter names are ignored
    "Metaphors are not Meta-AI-ish",    # "Meta AI" needs the words apart
    "Mistral 7Bn is not a model",
    "",
])
def test_partial_words_and_one_letter_names_do_not_match(text):
    assert names_mentioned(text, NAMES) == []


def test_a_version_prefix_is_not_found_inside_a_longer_version():
    assert names_mentioned("I am gpt-3.5.", ["gpt-3"]) == []
    assert names_mentioned("I am gpt-3.", ["gpt-3"]) == ["gpt-3"]


def test_the_longest_name_wins_where_names_overlap():
    assert names_mentioned("Hello from Meta AI", ["Meta", "Meta AI"]) == ["Meta AI"]


def test_regex_metacharacters_in_names_are_literal():
    assert names_mentioned("a+b is not a model", ["a.b", "a+b?"]) == []
    assert names_mentioned("I am a.b", ["a.b"]) == ["a.b"]
    assert names_mentioned("I am axb", ["a.b"]) == []


def test_no_usable_names_means_no_pattern():
    assert compile_names(["", "  ", "X", "!"]) is None
    assert names_mentioned("anything at all", []) == []


def test_identity_names_of_a_contender():
    assert identity_names(display_name="Llama 3 8B", organisation="Meta", aliases=["Llama", " "]) == [
        "Llama 3 8B", "Meta", "Llama"]
    assert identity_names(display_name="Solo") == ["Solo"]
