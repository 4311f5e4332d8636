"""export_battles / import_battles on PostgreSQL: the FastChat shape, a round trip, all-or-nothing imports."""
from __future__ import annotations

import csv
import itertools
import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from arena.models import Battle
from leaderboard.battle_files import read_battles
from leaderboard.engine import rate
from leaderboard.models import EloRating, ImportedBattle
from leaderboard.selectors import snapshot_latest
from leaderboard.services import judge_hash, leaderboard_refresh
from tests.leaderboard.conftest import real_votes_path, simulate_votes
from tests.leaderboard.test_snapshots import (  # noqa: F401 (arena and quick are fixtures)
    BASE_TIME, STRENGTHS, arena, markdown_answer, quick,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("require_postgres")]


def export(path, *args) -> str:
    out = StringIO()
    call_command("export_battles", str(path), *args, stdout=out)
    return out.getvalue()


def import_(path, *args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_battles", str(path), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def ratings_of(snapshot) -> dict[str, float]:
    return {row.model_name: row.rating for row in snapshot.rows.all()}


def test_export_writes_the_fastchat_clean_battle_shape(arena, quick, tmp_path):
    rater = arena.user("alice.secret")
    arena.votes([("alpha", "beta", "model_a"), ("beta", "gamma", "tie (bothbad)")], rater=rater,
                prompts=("Wie spät ist es in Berlin und warum?", "Und morgen?"))
    arena.votes([("gamma", "alpha", "tie")], rater=rater, anonymous=False, start=BASE_TIME + timedelta(hours=1))
    arena.votes([("alpha", "gamma", "model_b")], rater=rater, identity_leak=True, start=BASE_TIME + timedelta(hours=2))

    assert "3 battles" in export(tmp_path / "out.json", "--conversations")

    text = (tmp_path / "out.json").read_text()
    battles = json.loads(text)
    assert "alice.secret" not in text
    assert [(b["model_a"], b["model_b"], b["winner"], b["anony"]) for b in battles] == [
        ("alpha", "beta", "model_a", True), ("beta", "gamma", "tie (bothbad)", True), ("gamma", "alpha", "tie", False)]
    first = battles[0]
    assert first["judge"] == judge_hash(rater.pk) and first["judge"].startswith("arena_user_")
    assert (first["language"], first["turn"]) == ("German", 2)
    assert isinstance(first["tstamp"], float) and len(first["question_id"]) == 32
    assert first["conversation_a"] == [
        {"role": "user", "content": "Wie spät ist es in Berlin und warum?"}, {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "Und morgen?"}, {"role": "assistant", "content": "Paris."}]
    assert first["conversation_b"][1]["content"] == "It is Paris."
    # The engine's own reader takes the export as it is.
    assert list(read_battles(tmp_path / "out.json", anony_only=True)) == [
        ("alpha", "beta", "model_a"), ("beta", "gamma", "tie (bothbad)")]


def test_round_trip_export_then_import_gives_the_same_leaderboard(arena, quick, tmp_path):
    quick.LEADERBOARD_STYLE_CONTROL = True
    quick.LEADERBOARD_STYLE_REFRESH_SECONDS = 0  # style control inline, with the plain ratings
    quick.LEADERBOARD_STYLE_BOOTSTRAP_ROUNDS = 0
    rater = arena.user("r1")
    votes = simulate_votes(STRENGTHS, 400, seed=21)
    arena.votes(votes, rater=rater, answers=markdown_answer)
    arena.votes(simulate_votes(STRENGTHS, 30, seed=22), rater=rater, anonymous=False)
    leaderboard_refresh(categories=["overall"])
    native = snapshot_latest(category="overall")
    native_style = snapshot_latest(category="overall", style_control=True)
    native_elo = dict(EloRating.objects.filter(category="overall").values_list("model_name", "rating"))

    export(tmp_path / "battles.json", "--conversations")
    Battle.objects.all().delete()  # the arena forgets its votes...
    out, err = import_(tmp_path / "battles.json")  # ...and gets them back from the file
    assert "430 battles read: 430 imported" in out
    assert "checked 430 rows" in err and "written 430 rows" in err

    leaderboard_refresh(categories=["overall"], force=True)
    imported = snapshot_latest(category="overall")
    assert imported.pk != native.pk and imported.votes_read == 400
    assert ratings_of(imported) == pytest.approx(ratings_of(native), abs=1e-9)
    assert ratings_of(snapshot_latest(category="overall", style_control=True)) == pytest.approx(
        ratings_of(native_style), abs=1e-9)
    assert dict(EloRating.objects.filter(category="overall").values_list("model_name", "rating")) == pytest.approx(
        native_elo, abs=1e-9)
    # Exporting the imported battles writes the same file again (judges, times and conversations kept).
    export(tmp_path / "again.json", "--conversations")
    assert json.loads((tmp_path / "again.json").read_text()) == json.loads((tmp_path / "battles.json").read_text())


def test_import_is_idempotent_and_skips_the_arenas_own_battles(arena, quick, tmp_path):
    rater = arena.user("r1")
    arena.votes(simulate_votes(STRENGTHS, 20, seed=1), rater=rater)
    export(tmp_path / "own.json")
    out, _ = import_(tmp_path / "own.json")
    assert "20 battles read: 0 imported, 0 already imported, 20 are this arena's own battles" in out

    path = tmp_path / "votes.jsonl"
    path.write_text("".join(json.dumps({"model_a": a, "model_b": b, "winner": w, "tstamp": 1_700_000_000 + k}) + "\n"
                            for k, (a, b, w) in enumerate(simulate_votes(STRENGTHS, 50, seed=2))))
    assert "50 imported" in import_(path)[0]
    out, _ = import_(path)
    assert "0 imported, 50 already imported" in out
    assert ImportedBattle.objects.count() == 50


def test_imported_csv_of_real_votes_rates_like_the_engine(quick, tmp_path):
    path = tmp_path / "real.csv"
    with open(real_votes_path(), newline="") as source, open(path, "w", newline="") as target:
        for line in itertools.islice(source, 3001):
            target.write(line)
    out, _ = import_(path, "--quiet-progress")
    assert "3,000 battles read: 3,000 imported" in out
    leaderboard_refresh(categories=["overall"])
    snapshot = snapshot_latest(category="overall")
    expected = rate(read_battles(path), bootstrap_rounds=20, seed=11, min_votes=10)
    assert ratings_of(snapshot) == pytest.approx(expected.ratings, abs=1e-9)
    assert {row.model_name: row.ci_upper for row in snapshot.rows.all()} == pytest.approx(
        {m.model: m.ci_upper for m in expected.models}, abs=1e-9)
    assert all(row.contender is None for row in snapshot.rows.all())  # no contender of these names here


@pytest.mark.parametrize("name, content, line, message", [
    ("bad.jsonl",
     '{"model_a": "x", "model_b": "y", "winner": "model_a"}\n\n{"model_a": "x", "model_b": "y", "winner": "a"}\n',
     3, "winner must be one of"),
    ("bad.json",
     '[\n  {"model_a": "x", "model_b": "y", "winner": "tie"},\n  {"model_a": "x", "model_b": "x", "winner": "tie"}\n]\n',
     3, "cannot battle itself"),
    ("bad.csv", "model_a,model_b,winner,tstamp\nx,y,model_a,1700000000\nx,y,model_b,yesterday\n",
     3, "tstamp must be a Unix time"),
    ("broken.json", '[\n  {"model_a": "x", "model_b": "y", "winner": "tie"},\n  {"model_a": "x",\n', 4, "invalid JSON"),
    ("noanony.jsonl", '{"model_a": "x", "model_b": "y", "winner": "tie", "anony": "maybe"}\n', 1, "'anony' must be"),
])
def test_a_bad_row_is_reported_with_its_line_and_nothing_is_imported(tmp_path, name, content, line, message):
    path = tmp_path / name
    path.write_text(content)
    err = StringIO()
    with pytest.raises(CommandError, match="nothing was imported") as info:
        call_command("import_battles", str(path), stdout=StringIO(), stderr=err)
    # Row errors are listed on stderr; a file that cannot be read on says so in the error itself.
    reported = str(info.value) + "\n" + err.getvalue()
    assert f"{name}, line {line}: " in reported and message in reported
    assert ImportedBattle.objects.count() == 0


def test_every_bad_row_is_listed_up_to_the_limit(tmp_path):
    path = tmp_path / "many.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model_a", "model_b", "winner"])
        for k in range(30):
            writer.writerow(["x", "y", "model_a" if k % 2 else "nobody"])
    err = StringIO()
    with pytest.raises(CommandError, match="5 bad row"):
        call_command("import_battles", str(path), "--max-errors", "5", stdout=StringIO(), stderr=err)
    listed = err.getvalue().splitlines()
    assert [entry.split(", line ")[1].split(":")[0] for entry in listed] == ["2", "4", "6", "8", "10"]
    assert ImportedBattle.objects.count() == 0
