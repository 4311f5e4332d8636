"""``manage.py rate``: table and JSON output, errors with line numbers, no database, memory on a
1.7-million-row file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from .conftest import real_votes_path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_FIELDS = {"model", "rating", "ci_lower", "ci_upper", "rank_ub", "votes", "win_rate", "elo", "provisional"}


def run_rate(*args: str) -> str:
    out = StringIO()
    call_command("rate", *args, stdout=out)
    return out.getvalue()


def no_database_env() -> dict[str, str]:
    # A database URL nothing listens on: the command must finish without connecting.
    env = dict(os.environ)
    env.update(DATABASE_URL="postgres://nobody:nothing@127.0.0.1:9/none", SECRET_KEY="test-secret")
    env.pop("REDIS_URL", None)
    return env


def manage(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "rate", *args], cwd=REPO_ROOT, env=no_database_env(),
                          capture_output=True, text=True, timeout=120, **kwargs)


def test_json_output_shape_on_real_votes():
    data = json.loads(run_rate("--battles", str(real_votes_path()), "--bootstrap", "100", "--seed", "1",
                               "--min-votes", "800", "--json"))
    assert set(data) == {"battles", "params", "models"}
    assert data["battles"] == 25_938 and len(data["models"]) == 20
    assert all(set(model) == MODEL_FIELDS for model in data["models"])
    ratings = [model["rating"] for model in data["models"]]
    assert ratings == sorted(ratings, reverse=True)
    assert data["models"][0]["model"] == "gpt-4" and data["models"][0]["rank_ub"] == 1
    params = data["params"]
    assert params["bootstrap_rounds"] == 100 and params["seed"] == 1 and params["min_votes"] == 800
    assert params["ties"] == "half" and params["bothbad"] == "tie" and params["anchor"] is None
    assert params["solver"]["converged"] and params["solver"]["max_gradient"] <= 1e-6 * 25_938
    assert {m["model"] for m in data["models"] if m["provisional"]} == {"guanaco-33b", "gpt4all-13b-snoozy"}


def test_options_reach_the_engine():
    data = json.loads(run_rate("--battles", str(real_votes_path()), "--bootstrap", "0", "--anchor", "vicuna-13b=1100",
                               "--ties", "half", "--bothbad", "drop", "--format", "csv", "--json"))
    assert data["battles"] == 25_938 - 4_772  # both-bad ties left out
    vicuna = next(m for m in data["models"] if m["model"] == "vicuna-13b")
    assert vicuna["rating"] == pytest.approx(1100.0)
    assert vicuna["ci_lower"] is None and data["params"]["anchor"] == ["vicuna-13b", 1100.0]
    dropped = json.loads(run_rate("--battles", str(real_votes_path()), "--bootstrap", "0", "--ties", "drop", "--json"))
    assert dropped["battles"] == 9_252 + 9_068


def test_table_output():
    text = run_rate("--battles", str(real_votes_path()), "--bootstrap", "50", "--seed", "3", "--min-votes", "800")
    lines = text.splitlines()
    assert lines[0].startswith("25,938 battles counted of 25,938 votes, 20 models")
    header = next(line for line in lines if line.lstrip().startswith("rank"))
    for column in ("model", "rating", "CI", "votes", "win rate", "elo"):
        assert column in header
    first = lines[lines.index(header) + 2]
    assert first.split()[:2] == ["1", "gpt-4"] and "%" in first and "+" in first and "/-" in first
    assert "guanaco-33b *" in text and "* provisional: fewer than 800 counted votes" in text


def test_bad_row_is_a_command_error_with_the_line(tmp_path):
    path = tmp_path / "votes.csv"
    path.write_text("model_a,model_b,winner\na,b,model_a\nb,a,tie\na,b,draw\n")
    with pytest.raises(CommandError) as caught:
        run_rate("--battles", str(path))
    assert str(caught.value) == (
        f"{path}, line 4: winner must be one of 'model_a', 'model_b', 'tie', 'tie (bothbad)'; got 'draw'")


@pytest.mark.parametrize("args, message", [
    (["--battles", "/nonexistent/votes.csv"], "no such file"),
    (["--anchor", "gpt-4"], "--anchor must look like MODEL=RATING"),
    (["--anchor", "nobody=1000"], "anchor model 'nobody'"),
    (["--bootstrap", "-1"], "--bootstrap must be >= 0"),
    (["--format", "jsonl"], "line 1: invalid JSON"),
])
def test_other_errors_are_clear(args, message):
    if "--battles" not in args:
        args = ["--battles", str(real_votes_path()), *args]
    with pytest.raises(CommandError, match=message):
        run_rate(*args)


def test_degenerate_option(tmp_path):
    path = tmp_path / "votes.jsonl"
    path.write_text("\n".join(json.dumps({"model_a": a, "model_b": b, "winner": w}) for a, b, w in
                              [("a", "b", "model_a"), ("b", "a", "model_a"), ("c", "a", "model_b")]))
    with pytest.raises(CommandError, match="no wins or ties: c"):
        run_rate("--battles", str(path), "--degenerate", "error")
    text = run_rate("--battles", str(path), "--bootstrap", "20", "--seed", "1")
    assert "WARNING: weak prior applied" in text and "no wins or ties: c" in text


def test_subprocess_prints_exactly_one_json_object_without_a_database():
    done = manage("--battles", str(real_votes_path()), "--bootstrap", "200", "--seed", "7", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)  # the whole stdout is one JSON document
    assert data["battles"] == 25_938 and [m["model"] for m in data["models"]][0] == "gpt-4"
    assert done.stderr == ""


def test_subprocess_bad_row_exits_non_zero_with_the_line_on_stderr(tmp_path):
    path = tmp_path / "clean_battle.json"
    path.write_text('[\n  {"model_a": "a", "model_b": "b", "winner": "tie"},\n'
                    '  {"model_a": "a", "model_b": "a", "winner": "tie"}\n]\n')
    done = manage("--battles", str(path), "--json")
    assert done.returncode != 0
    assert done.stdout == ""
    assert "line 3" in done.stderr and "a model cannot battle itself" in done.stderr
    assert "Traceback" not in done.stderr


def write_large_csv(path: Path, rows: int, n_models: int = 60, seed: int = 0) -> None:
    """A Bradley-Terry arena, written through a table of every possible line (fast, vectorised)."""
    rng = np.random.default_rng(seed)
    names = [f"model-{k:03d}" for k in range(n_models)]
    strength = rng.normal(0, 0.7, n_models)
    a = rng.integers(0, n_models, rows)
    b = (a + rng.integers(1, n_models, rows)) % n_models
    a_wins = rng.random(rows) < 1 / (1 + np.exp(strength[b] - strength[a]))
    outcome = np.where(rng.random(rows) < 0.3, rng.integers(2, 4, rows), np.where(a_wins, 0, 1))
    winners = ["model_a", "model_b", "tie", "tie (bothbad)"]
    lines = np.array([f"{x},{y},{w}" for x in names for y in names for w in winners], dtype=object)
    with open(path, "w") as handle:
        handle.write("model_a,model_b,winner\n")
        handle.write("\n".join(lines[(a * n_models + b) * 4 + outcome]))
        handle.write("\n")


MEASURE_CHILD = """
import resource, subprocess, sys
returncode = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as report:
    report.write(f"{returncode} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
"""


def test_large_file_streams_in_bounded_memory(tmp_path):
    rows = 1_700_000
    path = tmp_path / "battles.csv"
    started = time.perf_counter()
    write_large_csv(path, rows)
    written = time.perf_counter() - started
    out, err, usage_file = tmp_path / "out.json", tmp_path / "err.txt", tmp_path / "usage.txt"
    command = [sys.executable, "manage.py", "rate", "--battles", str(path), "--bootstrap", "200", "--seed", "1", "--json"]
    started = time.perf_counter()
    # A small launcher runs the command and reports getrusage(RUSAGE_CHILDREN): a child started
    # straight from this test process would inherit the test process's own peak RSS at exec.
    with open(out, "w") as stdout, open(err, "w") as stderr:
        subprocess.run([sys.executable, "-c", MEASURE_CHILD, str(usage_file), *command], cwd=REPO_ROOT,
                       env=no_database_env(), stdout=stdout, stderr=stderr, timeout=300, check=False)
    seconds = time.perf_counter() - started
    returncode, peak_kb = (int(value) for value in usage_file.read_text().split())
    peak_mb = peak_kb / 1024  # ru_maxrss is in kilobytes on Linux
    print(f"\n{rows:,}-row CSV ({path.stat().st_size / 1e6:.0f} MB, written in {written:.1f} s): "
          f"rate command {seconds:.1f} s, peak RSS {peak_mb:.0f} MB")
    assert returncode == 0, err.read_text()
    data = json.loads(out.read_text())
    assert data["battles"] == rows and len(data["models"]) == 60
    assert data["params"]["solver"]["converged"]
    assert peak_mb < 2048
