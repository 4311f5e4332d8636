"""Categories: the detection heuristics (plain strings) and one snapshot per category from the database."""
from __future__ import annotations

import pytest

from leaderboard import categories as cats
from leaderboard.engine import rate
from leaderboard.models import VoteRecord
from leaderboard.selectors import snapshot_latest
from leaderboard.services import leaderboard_refresh, vote_records_fill
from tests.leaderboard.conftest import simulate_votes
from tests.leaderboard.test_snapshots import STRENGTHS, arena, quick  # noqa: F401 (fixtures)


@pytest.mark.parametrize("text, code", [
    ("What is the capital of France?", "en"),
    ("Tell me a story about a dragon", "en"),
    ("Wie spät ist es in Berlin und warum?", "de"),
    ("Quelle est la capitale de la France ?", "fr"),
    ("¿Cuál es la capital de Francia y por qué?", "es"),
    ("O que é a vida? Não sei.", "pt"),
    ("Come stai oggi? Che cosa fai?", "it"),
    ("Hoe gaat het met je?", "nl"),
    ("Jak się masz? Co robisz?", "pl"),
    ("Merhaba, nasılsın? Bugün ne yapıyorsun?", "tr"),
    ("Xin chào, bạn khỏe không?", "vi"),
    ("日本の首都はどこですか", "ja"),
    ("中国的首都是哪里？", "zh"),
    ("用 Python 写一个快速排序", "zh"),
    ("한국의 수도는 어디입니까?", "ko"),
    ("Какая столица России?", "ru"),
    ("Яка столиця України? Її історія", "uk"),
    ("ما هي عاصمة مصر؟", "ar"),
    ("پایتخت ایران کجاست؟", "fa"),
    ("भारत की राजधानी क्या है?", "hi"),
    ("Ποια είναι η πρωτεύουσα της Ελλάδας;", "el"),
])
def test_language_detection(text, code):
    assert cats.detect_language(text) == code


@pytest.mark.parametrize("text", ["", "   ", "12345 !!!", "Hello", "ok"])
def test_too_little_text_has_no_language(text):
    assert cats.detect_language(text) == ""


@pytest.mark.parametrize("text", [
    "```python\nprint('hi')\n```\nWhy does this fail?",
    "Write a Python function that reverses a linked list",
    "Write a SQL query that selects users older than 30",
    "def f(x):\n    return x + 1\nwhat does this do",
    "My java code throws an error when the loop ends",
    "x = [1, 2, 3]; print(x[0])",
    "Explain recursion with an example",
    "#include <stdio.h>\nint main() { return 0; }",
])
def test_coding_prompts_are_detected(text):
    assert cats.is_coding_prompt(text)


@pytest.mark.parametrize("text", [
    "What is the capital of France?",
    "Write a poem about the sea; make it rhyme.",
    "I found a bug in my garden, what is it?",
    "The class was boring and the teacher was late",
    "What is f(x) if x = 2?",
    "Summarise this: the meeting (held on Monday) was long; everyone left early.",
])
def test_everyday_prompts_are_not_coding(text):
    assert not cats.is_coding_prompt(text)


def test_language_names_from_exports_become_codes():
    assert cats.language_code("English") == "en"
    assert cats.language_code("chinese") == "zh"
    assert cats.language_code("en") == "en"
    assert cats.language_code("unknown") == ""
    assert cats.language_code("Klingon (tlhIngan)") == "klingon-tlhingan"


def test_prompt_hash_ignores_case_and_spacing():
    assert cats.prompt_hash("Hello   World\n") == cats.prompt_hash("hello world")
    assert cats.prompt_hash("hello world") != cats.prompt_hash("hello, world")


def test_categories_of_a_battle():
    assert cats.categories_of(language="de", is_coding=True, prompt_chars=5000, turns=3, long_prompt_chars=1000) == [
        "overall", "lang-de", "multi-turn", "long-prompts", "coding"]
    assert cats.categories_of(language="", is_coding=False, prompt_chars=None, turns=1,
                              long_prompt_chars=1000) == ["overall"]
    tags = cats.tag_prompts(["Wie geht es dir heute?", "Und morgen? ```code```"])
    assert (tags.language, tags.turns, tags.is_coding) == ("de", 2, True)
    assert tags.prompt_chars == len("Wie geht es dir heute?") + len("Und morgen? ```code```")


def test_category_names_are_checked():
    for good in ("overall", "coding", "multi-turn", "long-prompts", "lang-en", "lang-klingon-tlhingan"):
        assert cats.is_valid_category(good)
    for bad in ("", "everything", "lang-", "lang-EN", "lang-x/y", "../overall"):
        assert not cats.is_valid_category(bad)
    assert cats.category_label("lang-fr") == "Language: French"


CODING = "Write a Python function that sorts a list"
GERMAN = "Wie spät ist es in Berlin und warum?"
LONG = "Please summarise the following text. " + "The weather was fine and everyone was happy. " * 40


@pytest.mark.django_db
@pytest.mark.usefixtures("require_postgres")
def test_each_category_is_its_own_snapshot_equal_to_the_engine_on_its_votes(arena, quick):
    rater = arena.user("r1")
    plain = simulate_votes(STRENGTHS, 300, seed=1)
    coding = simulate_votes(STRENGTHS, 200, seed=2)
    german = simulate_votes(STRENGTHS, 150, seed=3)
    long = simulate_votes(STRENGTHS, 120, seed=4)
    multi = simulate_votes(STRENGTHS, 100, seed=5)
    arena.votes(plain, rater=rater)
    arena.votes(coding, rater=rater, prompts=(CODING,))
    arena.votes(german, rater=rater, prompts=(GERMAN,))
    arena.votes(long, rater=rater, prompts=(LONG,))
    arena.votes(multi, rater=rater, prompts=("Hello there, how are you?", "And what about tomorrow?"))
    quick.LEADERBOARD_LONG_PROMPT_CHARS = 1000

    report = leaderboard_refresh()

    assert {s.category for s in report.written} == {"overall", "coding", "lang-de", "lang-en", "long-prompts",
                                                    "multi-turn"}
    expected_votes = {
        "overall": plain + coding + german + long + multi, "coding": coding, "lang-de": german,
        "lang-en": plain + coding + long + multi, "long-prompts": long, "multi-turn": multi,
    }
    for category, votes in expected_votes.items():
        snapshot = snapshot_latest(category=category)
        expected = rate(votes, bootstrap_rounds=0)
        got = {row.model_name: row.rating for row in snapshot.rows.all()}
        assert snapshot.votes_read == len(votes), category
        assert got == pytest.approx(expected.ratings, abs=1e-9), category
    tags = VoteRecord.objects.filter(turns=2)
    assert tags.count() == 100 and all(t.language == "en" for t in tags)


def snapshot_rows(report) -> dict[str, list[tuple]]:
    return {s.category: [(r.model_name, r.rating, r.ci_lower, r.ci_upper, r.rank_ub, r.votes)
                         for r in s.rows.order_by("position")] for s in report.written}


@pytest.mark.django_db
@pytest.mark.usefixtures("require_postgres")
def test_a_pool_of_rating_processes_writes_the_snapshots_the_refresh_process_writes(arena, quick):
    from leaderboard import rating_pool

    rater = arena.user("r1")
    arena.votes(simulate_votes(STRENGTHS, 300, seed=1), rater=rater)
    arena.votes(simulate_votes(STRENGTHS, 200, seed=2), rater=rater, prompts=(CODING,))
    arena.votes(simulate_votes(STRENGTHS, 150, seed=3), rater=rater, prompts=(GERMAN,))
    inline = snapshot_rows(leaderboard_refresh())
    assert set(inline) == {"overall", "coding", "lang-de", "lang-en"} and rating_pool._pool is None
    quick.LEADERBOARD_RATING_PROCESSES = 2
    try:
        rating_pool.warm_up()  # both processes started, the engine imported in each
        assert rating_pool._pool[0] == 2 and len(rating_pool._pool[1]._processes) == 2
        pooled = leaderboard_refresh(force=True)
        assert [s.category for s in pooled.written][0] == "overall"  # written first, as without a pool
        assert snapshot_rows(pooled) == inline
        size, executor = rating_pool._pool
        assert size == 2 and len(executor._processes) == 2  # the categories were rated in the children

        # Children killed: the refresh rates in its own process instead; every snapshot is written.
        for process in list(executor._processes.values()):
            process.kill()
            process.join(10)
        again = leaderboard_refresh(force=True)
        assert snapshot_rows(again) == inline and not again.failed
    finally:
        rating_pool.shutdown()


@pytest.mark.django_db
@pytest.mark.usefixtures("require_postgres")
def test_small_categories_wait_for_enough_votes_unless_asked_for(arena, quick):
    quick.LEADERBOARD_MIN_CATEGORY_VOTES = 50
    rater = arena.user("r1")
    arena.votes(simulate_votes(STRENGTHS, 200, seed=1), rater=rater)
    arena.votes(simulate_votes(STRENGTHS, 12, seed=2), rater=rater, prompts=(CODING,))
    report = leaderboard_refresh()
    assert "coding" not in {s.category for s in report.written}
    asked = leaderboard_refresh(categories=["coding"])
    assert [s.category for s in asked.written] == ["coding"]
    assert vote_records_fill(full=True) == 0  # every vote was recorded once
