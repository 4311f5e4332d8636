"""Benchmark columns on the leaderboard, imported results on model pages, the correlation page."""
from __future__ import annotations

import csv
import io
import json

import pytest
from django.urls import reverse

from arena.roles import VIEWER
from leaderboard.harness import normalise_score
from leaderboard.harness.services import harness_import
from leaderboard.models import BenchmarkColumn, BenchmarkColumnSet, SnapshotRow
from leaderboard.selectors import snapshot_latest
from leaderboard.services import leaderboard_refresh
from tests.leaderboard.conftest import simulate_votes
from tests.leaderboard.test_harness_parser import reference_file
from tests.leaderboard.test_snapshots import arena, quick  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("require_postgres")]

STRENGTHS = {"m1": 1.5, "m2": 1.0, "m3": 0.5, "m4": 0.0, "m5": -0.5, "m6": -1.0}


def results_doc(model: str, scores: dict, *, limit: float | None = None) -> bytes:
    """A 0.4.13-shaped results file: ``scores`` maps task -> (metric, value, stderr, n_shot)."""
    results, n_shot, versions, samples = {}, {}, {}, {}
    for task, (metric, value, stderr, shots) in scores.items():
        name, _, filter_name = metric.partition(",")
        results[task] = {"alias": task, metric: value, f"{name}_stderr,{filter_name}": stderr}
        n_shot[task], versions[task] = shots, 1.0
        samples[task] = {"original": 100, "effective": int(limit) if limit else 100}
    doc = {"results": results, "group_subtasks": {}, "versions": versions, "n-shot": n_shot,
           "n-samples": samples, "config": {"model": "hf", "model_args": f"pretrained={model}", "limit": limit},
           "date": 1764325560.0, "lm_eval_version": "0.4.13", "model_name": model}
    return json.dumps(doc).encode()


def gpqa_raw(rank: int) -> float:
    return 0.30 + 0.08 * (5 - rank)


@pytest.fixture
def bench(arena, quick):
    """Six established contenders and a provisional one; v2-style results for all of them.

    GPQA rises with the arena score, so its rank correlation is exactly 1. The runner-up ran GPQA
    5-shot (the preset says 0) and the third only on a subset (--limit). MMLU-PRO exists for three.
    """
    for name in [*STRENGTHS, "newcomer"]:
        arena.contender(name)
    arena.votes(simulate_votes(STRENGTHS, 1500, seed=4), rater=arena.user("voter"))
    arena.votes([("newcomer", "m1", "model_a"), ("newcomer", "m2", "model_a")], rater=arena.user("voter2"))
    leaderboard_refresh(categories=["overall"])
    snapshot = snapshot_latest(category="overall")
    ranked = [row.model_name for row in SnapshotRow.objects.filter(snapshot=snapshot, provisional=False)
              .order_by("position")]
    assert sorted(ranked) == sorted(STRENGTHS)
    for rank, name in enumerate(ranked):
        scores = {"leaderboard_gpqa": ("acc_norm,none", gpqa_raw(rank), 0.02, 5 if rank == 1 else 0)}
        if rank < 3:
            scores["leaderboard_mmlu_pro"] = ("acc,none", 0.5 - 0.1 * rank, 0.01, 5)
        harness_import(path_or_bytes=results_doc(name, scores, limit=10.0 if rank == 2 else None),
                       name=f"results_{name}.json")
    # The provisional newcomer won both its votes but has the worst GPQA: it must not count in the correlation.
    harness_import(path_or_bytes=results_doc("newcomer", {"leaderboard_gpqa": ("acc_norm,none", 0.26, 0.01, 0)}),
                   name="results_newcomer.json")
    arena.ranked = ranked
    return arena


@pytest.fixture
def viewer(client, bench):
    client.force_login(bench.user("pm", role=VIEWER))
    return client


def cells(row: dict) -> dict:
    return {cell["key"]: cell for cell in row["benchmarks"]}


# ---------------------------------------------------------------------------------------------
# Leaderboard columns


def test_v2_preset_adds_columns_with_stderr_and_warnings(viewer, bench):
    data = viewer.get(reverse("leaderboard:board-json"), {"preset": "open_llm_v2"}).json()
    assert [column["key"] for column in data["preset"]["columns"]] == [
        "ifeval", "bbh", "math_lvl5", "gpqa", "musr", "mmlu_pro", "average"]
    rows = {row["model"]: row for row in data["models"]}
    best, second, third = (cells(rows[name]) for name in bench.ranked[:3])
    assert best["gpqa"]["value"] == pytest.approx(normalise_score(gpqa_raw(0), 0.25))
    assert best["gpqa"]["stderr"] == pytest.approx(0.02 * 100 / 0.75)
    assert best["gpqa"]["raw"] == pytest.approx(gpqa_raw(0))
    assert best["gpqa"]["warn"] is False and best["gpqa"]["flags"] == []
    assert best["mmlu_pro"]["value"] == pytest.approx(normalise_score(0.5, 0.1))
    assert best["ifeval"]["value"] is None and best["average"]["value"] is None  # incomplete
    assert "n_shot_mismatch" in second["gpqa"]["flags"] and second["gpqa"]["warn"]
    assert "limit" in third["gpqa"]["flags"] and third["gpqa"]["warn"]
    assert "limit" in third["mmlu_pro"]["flags"]
    assert cells(rows["newcomer"])["gpqa"]["value"] == pytest.approx(normalise_score(0.26, 0.25))

    plain = viewer.get(reverse("leaderboard:board-json")).json()
    assert "preset" not in plain and all("benchmarks" not in row for row in plain["models"])


def test_board_page_shows_columns_hover_and_marks(viewer, bench):
    response = viewer.get(reverse("leaderboard:board"), {"preset": "open_llm_v2"})
    assert response.status_code == 200
    html = response.content.decode()
    for text in ("GPQA", "MMLU-PRO", "Average", 'value="open_llm_v2" selected', "Open LLM Leaderboard v1"):
        assert text in html
    stderr = 0.02 * 100 / 0.75
    assert f'title="± {stderr:.4g} (standard error' in html
    assert html.count('class="bench-warn"') >= 2
    assert "the preset uses 0-shot" in html and "subset of the questions (--limit)" in html
    table = response.context["data"]["models"]
    marked = {row["model"] for row in table if cells(row)["gpqa"]["warn"]}
    assert marked == {bench.ranked[1], bench.ranked[2]}
    # Without a preset there is no benchmark cell at all.
    assert 'class="num bench"' not in viewer.get(reverse("leaderboard:board")).content.decode()


def test_sorting_by_a_benchmark_column(viewer, bench):
    rows = viewer.get(reverse("leaderboard:board-json"),
                      {"preset": "open_llm_v2", "sort": "bench:gpqa", "dir": "desc"}).json()["models"]
    assert [row["model"] for row in rows] == [*bench.ranked, "newcomer"]
    rows = viewer.get(reverse("leaderboard:board-json"),
                      {"preset": "open_llm_v2", "sort": "bench:mmlu_pro", "dir": "asc"}).json()["models"]
    assert [row["model"] for row in rows][:3] == list(reversed(bench.ranked[:3]))  # unknown values last
    page = viewer.get(reverse("leaderboard:board"), {"preset": "open_llm_v2", "sort": "bench:gpqa", "dir": "desc"})
    assert "sort=bench%3Agpqa&amp;dir=asc" in page.content.decode()


def test_csv_carries_benchmark_columns(viewer, bench):
    response = viewer.get(reverse("leaderboard:board-csv"), {"preset": "open_llm_v2"})
    rows = {row["model"]: row for row in csv.DictReader(io.StringIO(response.content.decode()))}
    best, second = rows[bench.ranked[0]], rows[bench.ranked[1]]
    assert float(best["gpqa"]) == pytest.approx(normalise_score(gpqa_raw(0), 0.25))
    assert float(best["gpqa_stderr"]) == pytest.approx(0.02 * 100 / 0.75)
    assert best["gpqa_warnings"] == "" and second["gpqa_warnings"] == "n_shot_mismatch"
    assert best["ifeval"] == "" and best["average_warnings"].startswith("incomplete")
    snapshot = snapshot_latest(category="overall")
    permalink = viewer.get(reverse("leaderboard:snapshot-csv", args=[snapshot.pk]), {"preset": "open_llm_v1"})
    header = next(csv.reader(io.StringIO(permalink.content.decode())))
    assert {"arc", "arc_stderr", "gsm8k_warnings", "average"} <= set(header)


def test_unknown_preset_is_404(viewer, bench):
    for name in ("leaderboard:board", "leaderboard:board-json", "leaderboard:board-csv"):
        assert viewer.get(reverse(name), {"preset": "nope"}).status_code == 404
    snapshot = snapshot_latest(category="overall")
    page = viewer.get(reverse("leaderboard:snapshot", args=[snapshot.pk]), {"preset": "open_llm_v2"})
    assert page.status_code == 200 and "GPQA" in page.content.decode()


def test_custom_column_set(viewer, bench):
    custom = BenchmarkColumnSet.objects.create(key="internal", name="Internal suite", average=True)
    BenchmarkColumn.objects.create(column_set=custom, position=1, label="Mini MC", task="mini_mc", metric="acc",
                                   n_shot=2, scale=100)
    BenchmarkColumn.objects.create(column_set=custom, position=2, label="Mini gen <strict>", task="mini_gen",
                                   metric="exact_match,strict-match", n_shot=0)
    harness_import(path_or_bytes=reference_file("v0.4.13-local-completions"), contender=bench.ranked[0])
    page = viewer.get(reverse("leaderboard:board"), {"preset": "internal"})
    html = page.content.decode()
    assert 'value="internal" selected' in html and "Mini MC" in html
    assert "Mini gen &lt;strict&gt;" in html and "Mini gen <strict>" not in html
    data = viewer.get(reverse("leaderboard:board-json"), {"preset": "internal"}).json()
    assert [column["label"] for column in data["preset"]["columns"]] == ["Mini MC", "Mini gen <strict>", "Average"]
    row = next(row for row in data["models"] if row["model"] == bench.ranked[0])
    values = [cell["value"] for cell in row["benchmarks"]]
    assert values[0] == pytest.approx(75.0) and values[1] == pytest.approx(4 / 6)
    assert values[2] == pytest.approx((75.0 + 4 / 6) / 2)
    assert "n_shot_mismatch" in row["benchmarks"][1]["flags"]  # the file ran 2-shot, the column says 0
    assert "n_shot_mismatch" not in row["benchmarks"][0]["flags"]
    others = [row for row in data["models"] if row["model"] != bench.ranked[0]]
    assert all(cell["value"] is None for row in others for cell in row["benchmarks"])


# ---------------------------------------------------------------------------------------------
# Model page


def test_model_page_lists_every_imported_file(viewer, bench):
    name = bench.ranked[0]
    harness_import(path_or_bytes=reference_file("v0.4.13-dummy-group"), contender=name)
    response = viewer.get(reverse("leaderboard:model", args=[name]))
    html = response.content.decode()
    files = response.context["data"]["harness_files"]
    assert [item["file_name"] for item in files] == [reference_file("v0.4.13-dummy-group").name,
                                                     f"results_{name}.json"]
    for item in files:
        assert item["file_name"] in html and item["sha256"] in html
    assert "leaderboard_gpqa" in html and "mini_suite (group)" in html and "exact_match" in html
    data = viewer.get(reverse("leaderboard:model-json", args=[name])).json()
    assert len(data["harness_files"]) == 2 and len(data["harness_files"][0]["results"]) == 6
    third = viewer.get(reverse("leaderboard:model", args=[bench.ranked[2]])).content.decode()
    assert "subset of the questions (--limit)" in third


def test_model_page_escapes_file_contents(viewer, bench):
    name = bench.ranked[0]
    hostile = "<img src=x onerror=alert(1)>"
    harness_import(path_or_bytes=results_doc(name, {hostile: ("acc,none", 0.5, 0.1, 0)}),
                   name=f"{hostile}.json")
    html = viewer.get(reverse("leaderboard:model", args=[name])).content.decode()
    assert hostile not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_model_page_without_results(viewer, bench):
    bench.contender("lonely")
    html = viewer.get(reverse("leaderboard:model", args=["lonely"])).content.decode()
    assert "No benchmark results imported for this model." in html


# ---------------------------------------------------------------------------------------------
# Which benchmarks predict human preference


def test_correlation_json(viewer, bench):
    data = viewer.get(reverse("leaderboard:benchmarks-json"), {"preset": "open_llm_v2"}).json()
    assert data["snapshot"]["id"] == snapshot_latest(category="overall").pk
    assert data["models"] == 6  # the provisional newcomer does not count
    found = {item["column"]: item for item in data["correlations"]}
    assert list(found) == ["ifeval", "bbh", "math_lvl5", "gpqa", "musr", "mmlu_pro", "average"]
    gpqa = found["gpqa"]
    assert gpqa["status"] == "ok" and gpqa["n_models"] == 6
    assert gpqa["spearman"] == pytest.approx(1.0) and gpqa["kendall"] == pytest.approx(1.0)
    assert gpqa["spearman_ci"]["high"] == pytest.approx(1.0) and gpqa["spearman_ci"]["low"] <= 1.0
    assert gpqa["bootstrap_rounds"] == 1000 and gpqa["label"] == "GPQA"
    assert {point["model"] for point in gpqa["points"]} == set(STRENGTHS)
    assert found["mmlu_pro"]["status"] == "too_few_models" and found["mmlu_pro"]["n_models"] == 3
    assert found["mmlu_pro"]["spearman"] is None
    assert found["bbh"]["n_models"] == 0
    again = viewer.get(reverse("leaderboard:benchmarks-json"), {"preset": "open_llm_v2"}).json()
    assert again == data  # the bootstrap is seeded: the same snapshot gives the same intervals


def test_correlation_minimum_votes(viewer, bench):
    everyone = viewer.get(reverse("leaderboard:benchmarks-json"), {"preset": "open_llm_v2", "min_votes": "0"}).json()
    assert everyone["models"] == 7 and everyone["min_votes"] == 0
    gpqa = next(item for item in everyone["correlations"] if item["column"] == "gpqa")
    assert gpqa["n_models"] == 7 and gpqa["spearman"] < 1.0  # the newcomer's GPQA is out of line
    assert viewer.get(reverse("leaderboard:benchmarks-json"), {"min_votes": "-1"}).status_code == 404
    assert "with at least 0 votes" in viewer.get(reverse("leaderboard:benchmarks"),
                                                 {"preset": "open_llm_v2", "min_votes": "0"}).content.decode()


def test_correlation_over_every_imported_benchmark(viewer, bench):
    data = viewer.get(reverse("leaderboard:benchmarks-json")).json()
    assert data["preset"] == "imported"
    found = {item["column"]: item for item in data["correlations"]}
    assert set(found) == {"leaderboard_gpqa:acc_norm,none", "leaderboard_mmlu_pro:acc,none"}
    assert found["leaderboard_gpqa:acc_norm,none"]["spearman"] == pytest.approx(1.0)
    assert found["leaderboard_gpqa:acc_norm,none"]["points"][0]["benchmark"] == pytest.approx(
        next(gpqa_raw(rank) for rank, name in enumerate(bench.ranked) if name == "m1"))


def test_correlation_page(viewer, bench):
    response = viewer.get(reverse("leaderboard:benchmarks"), {"preset": "open_llm_v2"})
    assert response.status_code == 200
    html = response.content.decode()
    for text in ("Which benchmarks predict human preference", "Spearman", "Kendall", "chart-bench-3",
                 "benchmark-charts", "/leaderboard/plotly.min.js?v=", 'id="correlations"', "at least 5 are needed"):
        assert text in html
    assert "cdn" not in html.lower()
    assert 'value="open_llm_v2" selected' in html
    assert viewer.get(reverse("leaderboard:benchmarks"), {"preset": "nope"}).status_code == 404
    assert viewer.get(reverse("leaderboard:benchmarks-json"), {"preset": "nope"}).status_code == 404
    board = viewer.get(reverse("leaderboard:board")).content.decode()
    assert reverse("leaderboard:benchmarks") in board


def test_correlation_without_snapshot_or_results(client, arena):
    client.force_login(arena.user("pm", role=VIEWER))
    html = client.get(reverse("leaderboard:benchmarks")).content.decode()
    assert "No overall leaderboard yet" in html
    data = client.get(reverse("leaderboard:benchmarks-json"), {"preset": "open_llm_v1"}).json()
    assert data["snapshot"] is None and data["correlations"] == []


def test_correlation_roles(client, bench):
    urls = [reverse("leaderboard:benchmarks"), reverse("leaderboard:benchmarks-json")]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    client.force_login(bench.user("rater-only"))
    for url in urls:
        assert client.get(url).status_code == 403
    client.force_login(bench.user("pm", role=VIEWER))
    for url in urls:
        assert client.get(url).status_code == 200
        assert client.post(url).status_code == 405
    client.force_login(bench.user("boss", role=None, is_staff=True))
    for url in urls:
        assert client.get(url).status_code == 200
