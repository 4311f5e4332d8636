"""Battle files: the three formats, detection, streaming, and bad rows with their line numbers."""
from __future__ import annotations

import gzip
import json

import pytest

from leaderboard.battle_files import BattleFileError, detect_format, read_battles

BATTLES = [("gpt-4", "vicuna-13b", "model_a"), ("vicuna-13b", "gpt-4", "tie"), ("alpaca-13b", "gpt-4", "tie (bothbad)")]


def fastchat_objects(battles):
    return [{"model_a": a, "model_b": b, "winner": w, "tstamp": 1700000000.5 + k, "anony": k != 1,
             "judge": f"arena_user_{k}", "language": "English", "turn": 1} for k, (a, b, w) in enumerate(battles)]


@pytest.fixture
def files(tmp_path):
    objects = fastchat_objects(BATTLES)
    paths = {
        "fastchat": tmp_path / "clean_battle.json",
        "jsonl": tmp_path / "battles.jsonl",
        "csv": tmp_path / "battles.csv",
    }
    paths["fastchat"].write_text(json.dumps(objects, indent=2))
    paths["jsonl"].write_text("\n".join(json.dumps(o) for o in objects) + "\n\n")
    paths["csv"].write_text(",model_a,model_b,winner,extra\n" + "".join(
        f"{k},{a},{b},{w},x\n" for k, (a, b, w) in enumerate(BATTLES)))
    return paths


@pytest.mark.parametrize("kind", ["fastchat", "jsonl", "csv"])
def test_each_format_reads_the_same_battles(files, kind):
    assert detect_format(files[kind]) == kind
    assert list(read_battles(files[kind])) == BATTLES
    assert list(read_battles(files[kind], kind)) == BATTLES


def test_detection_by_content_when_the_extension_says_nothing(files, tmp_path):
    for kind, path in files.items():
        plain = tmp_path / f"export-{kind}.txt"
        plain.write_bytes(path.read_bytes())
        assert detect_format(plain) == kind
    lines = tmp_path / "lines.json"  # JSON Lines saved as .json
    lines.write_bytes(files["jsonl"].read_bytes())
    assert detect_format(lines) == "jsonl" and list(read_battles(lines)) == BATTLES


def test_gzip_files_are_read_transparently(files, tmp_path):
    packed = tmp_path / "battles.csv.gz"
    packed.write_bytes(gzip.compress(files["csv"].read_bytes()))
    assert list(read_battles(packed)) == BATTLES
    packed_json = tmp_path / "clean_battle.json.gz"
    packed_json.write_bytes(gzip.compress(files["fastchat"].read_bytes()))
    assert detect_format(packed_json) == "fastchat" and list(read_battles(packed_json)) == BATTLES


def test_anony_only_keeps_anonymous_votes(files, tmp_path):
    expected = [BATTLES[0], BATTLES[2]]
    assert list(read_battles(files["fastchat"], anony_only=True)) == expected
    assert list(read_battles(files["jsonl"], anony_only=True)) == expected
    with_flag = tmp_path / "flag.csv"
    with_flag.write_text("model_a,model_b,winner,anony\na,b,tie,True\na,b,model_a,false\n")
    assert list(read_battles(with_flag, anony_only=True)) == [("a", "b", "tie")]
    with pytest.raises(BattleFileError, match="lacks column"):
        list(read_battles(files["csv"], anony_only=True))


def test_readers_stream(files):
    reader = read_battles(files["csv"])
    assert next(reader) == BATTLES[0]  # a generator: nothing else read yet


def error_of(path, fmt="auto"):
    with pytest.raises(BattleFileError) as caught:
        list(read_battles(path, fmt))
    return caught.value


def test_csv_bad_rows_report_their_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("model_a,model_b,winner\na,b,model_a\n\nb,a,tie\nb,a,A wins\n")
    error = error_of(path)
    assert error.line == 5 and "winner must be one of" in error.message and "'A wins'" in error.message
    assert str(error) == f"{path}, line 5: {error.message}"
    path.write_text('model_a,model_b,winner\n"multi\nline",b,tie\na,a,tie\n')
    assert error_of(path).line == 4 and "cannot battle itself" in error_of(path).message
    path.write_text("model_a,model_b,winner\na,b\n")
    assert error_of(path).line == 2 and "expected at least 3 columns" in error_of(path).message
    path.write_text("model,opponent,result\n")
    assert error_of(path).line == 1 and "lacks column(s) model_a, model_b, winner" in error_of(path).message
    path.write_text("")
    assert error_of(path).line == 1 and "empty file" in error_of(path).message
    path.write_bytes(b"model_a,model_b,winner\na,b,tie\n\xff\xfe,b,tie\n")
    assert error_of(path).line == 3 and "not UTF-8" in error_of(path).message


def test_jsonl_bad_rows_report_their_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"model_a": "a", "model_b": "b", "winner": "tie"})
    path.write_text(f"{good}\n\n{good}\n{{not json}}\n")
    assert error_of(path).line == 4 and "invalid JSON" in error_of(path).message
    path.write_text(f"{good}\n{json.dumps({'model_a': 'a', 'winner': 'tie'})}\n")
    assert error_of(path).line == 2 and error_of(path).message == "missing model_b"
    path.write_text(f"{good}\n[1, 2]\n")
    assert error_of(path).line == 2 and "expected a JSON object" in error_of(path).message
    path.write_text(f"{good}\n{json.dumps({'model_a': 'a', 'model_b': 7, 'winner': 'tie'})}\n")
    assert error_of(path).line == 2 and "model_b must be a non-empty string" in error_of(path).message


def test_fastchat_bad_objects_report_the_line_they_start_on(tmp_path):
    objects = fastchat_objects(BATTLES)
    objects[2]["winner"] = "bothbad"
    path = tmp_path / "clean_battle.json"
    text = json.dumps(objects, indent=2)
    path.write_text(text)
    object_starts = [number for number, line in enumerate(text.splitlines(), 1) if line == "  {"]
    start_line = object_starts[2]  # the third object, the bad one
    assert start_line == 22
    error = error_of(path)
    assert error.line == start_line and "winner must be one of" in error.message
    path.write_text('[\n{"model_a": "a", "model_b": "b", "winner": "tie"},\n{"model_a": "a",, }\n]')
    assert error_of(path).line == 3 and "invalid JSON" in error_of(path).message
    path.write_text('[{"model_a": "a", "model_b": "b", "winner": "tie"}')
    assert "not closed" in error_of(path).message
    path.write_text('[{"model_a": "a", "model_b": "b", "winner": "tie"},]')
    assert "invalid JSON" in error_of(path).message
    path.write_text('{"model_a": "a"}')
    assert "expected a JSON list" in error_of(path, "fastchat").message


def test_missing_file_and_unknown_format(tmp_path):
    error = error_of(tmp_path / "nope.csv")
    assert error.line is None and "no such file" in str(error)
    with pytest.raises(ValueError, match="format must be one of"):
        read_battles(tmp_path / "x.csv", "xml")
