"""Reading lm-evaluation-harness results files: the real files in shared/reference and broken ones."""
from __future__ import annotations

import copy
import datetime as dt
import hashlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from leaderboard.harness import (
    DEFAULT_MAX_BYTES, HarnessFileError, file_name_time, parse_harness_json, parse_harness_version, parse_model_args,
    read_harness_file, rows_to_json,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = Path(__file__).resolve().parents[3] / "shared" / "reference" / "harness-results"
UTC = dt.timezone.utc


def reference_file(folder: str) -> Path:
    directory = RESULTS_DIR / folder
    found = sorted(directory.glob("results*.json")) if directory.is_dir() else []
    if len(found) != 1:
        pytest.fail(f"expected one results*.json in {directory} (real lm_eval output; see "
                    f"shared/reference/harness.md §10), found {len(found)}", pytrace=False)
    return found[0]


def reference_doc(folder: str) -> dict:
    return json.loads(reference_file(folder).read_text())


def parse_doc(doc, name: str = "results.json", **options):
    return parse_harness_json(json.dumps(doc), source_name=name, **options)


def by_key(run) -> dict[tuple[str, str], object]:
    return {(row.task, row.key): row for row in run.rows}


# ---------------------------------------------------------------------------------------------
# The real files


def test_v03_file():
    path = reference_file("v0.3.0")
    run = read_harness_file(path)
    assert run.format == "0.3" and run.harness_version == "0.3.x"
    assert run.model_name == "acme/dummy-7b" and run.model_source == "dummy"
    assert run.model_args == {"pretrained": "acme/dummy-7b"}
    assert run.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert run.evaluated_at is None and run.date_source is None and run.limit is None
    assert run.warnings == ()
    rows = by_key(run)
    assert set(rows) == {("mini_mc", "acc,none"), ("mini_mc", "acc_norm,none"), ("mini_gen", "exact_match,none")}
    acc = rows[("mini_mc", "acc,none")]
    assert acc.value == 0.375 and acc.stderr == pytest.approx(0.18298126367784995)
    assert acc.n_shot == 2  # 0.3.x has one global num_fewshot in config
    assert acc.task_version == "0" and acc.is_group is False and acc.higher_is_better is None
    assert rows[("mini_gen", "exact_match,none")].value == 0.0
    assert all(row.model_name == "acme/dummy-7b" and row.source_sha256 == run.source_sha256 for row in run.rows)


def test_v0413_group_file():
    path = reference_file("v0.4.13-dummy-group")
    run = read_harness_file(path)
    assert run.format == "0.4" and run.harness_version == "0.4.13"
    assert run.model_name == "acme/dummy-7b" and run.model_args == {"pretrained": "acme/dummy-7b"}
    assert run.evaluated_at == dt.datetime(2026, 11, 28, 10, 26, 0, 284993, tzinfo=UTC)
    assert run.date_source == "date"
    assert run.tasks == ("mini_mc", "mini_gen", "mini_suite")
    rows = by_key(run)
    assert len(run.rows) == 6
    # The group appears in `results` and `groups`; it is read once and marked.
    group = [row for row in run.rows if row.is_group]
    assert {(row.task, row.key) for row in group} == {("mini_suite", "acc,none"),
                                                       ("mini_suite", "exact_match,strict-match")}
    assert all(row.n_shot == 2 for row in run.rows)
    # versions: tasks are numbers (1.0), groups strings ("1.0") in 0.4.13
    assert {row.task_version for row in run.rows} == {"1.0"}
    mc = rows[("mini_mc", "acc_norm,none")]
    assert (mc.value, mc.higher_is_better, mc.samples_original, mc.samples_effective) == (0.375, True, 8, 8)
    assert not mc.used_limit
    assert rows[("mini_gen", "exact_match,flexible-extract")].filter == "flexible-extract"


def test_v0413_local_completions_known_numbers():
    run = read_harness_file(reference_file("v0.4.13-local-completions"))
    assert run.model_name == "acme/fake-7b"  # from model_args "model=", the local-completions way
    assert run.model_source == "local-completions"
    assert run.model_args["base_url"] == "http://127.0.0.1:8012/v1/completions"
    rows = by_key(run)
    assert rows[("mini_mc", "acc,none")].value == 0.75
    assert rows[("mini_mc", "acc_norm,none")].value == 0.75
    for key in ("exact_match,strict-match", "exact_match,flexible-extract"):
        assert rows[("mini_gen", key)].value == pytest.approx(4 / 6)
        assert rows[("mini_gen", key)].stderr == pytest.approx(0.210818510677892)
    assert rows[("mini_suite", "acc,none")].is_group


@pytest.mark.parametrize("folder", ["v0.3.0", "v0.4.13-dummy-group", "v0.4.13-local-completions"])
def test_rows_to_json_for_every_real_file(folder):
    path = reference_file(folder)
    run = read_harness_file(path)
    printed = rows_to_json(run.rows)
    assert rows_to_json(run) == printed
    data = json.loads(printed)
    assert len(data) == len(run.rows)
    first = data[0]
    assert list(first)[:10] == ["model_name", "task", "metric", "filter", "value", "stderr", "n_shot", "limit",
                                "used_limit", "harness_version"]
    assert first["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    for item, row in zip(data, run.rows):
        assert (item["task"], item["metric"], item["filter"], item["value"]) == (row.task, row.metric, row.filter,
                                                                                 row.value)
        if row.evaluated_at:
            assert dt.datetime.fromisoformat(item["evaluated_at"]) == row.evaluated_at


def test_file_object_and_text_give_the_same_hash_as_the_path():
    path = reference_file("v0.4.13-dummy-group")
    from_path = read_harness_file(path)
    from_handle = read_harness_file(io.BytesIO(path.read_bytes()), name=path.name)
    from_text = parse_harness_json(path.read_text(encoding="utf-8"), source_name=path.name)
    assert from_path.source_sha256 == from_handle.source_sha256 == from_text.source_sha256
    assert from_path.rows[0].value == from_handle.rows[0].value


def test_the_package_does_not_import_django():
    code = ("import sys, leaderboard.harness; "
            "loaded = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')); "
            "print(loaded); sys.exit(1 if loaded else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"Django modules loaded: {done.stdout} {done.stderr}"


# ---------------------------------------------------------------------------------------------
# Other eras, made from the real files


def v043_era_doc() -> dict:
    """The 0.4.3 / Open LLM Leaderboard v2 shape: string model_args, alias prefixes, no date, no lm_eval_version."""
    doc = reference_doc("v0.4.13-dummy-group")
    for key in ("lm_eval_version", "date"):
        doc.pop(key)
    doc["config"]["model_args"] = "pretrained=acme/dummy-7b,revision=abc123,dtype=bfloat16"
    for task, scores in doc["results"].items():
        for key in ("name", "sample_len", "sample_count"):
            scores.pop(key, None)
        scores["alias"] = (" - " if task != "mini_suite" else "") + scores["alias"]
    doc["groups"]["mini_suite"] = copy.deepcopy(doc["results"]["mini_suite"])
    doc["versions"].pop("mini_suite")
    doc["n-shot"].pop("mini_suite")  # 0.4.3 listed n-shot for leaf tasks only
    doc["results"]["mini_gen"]["exact_match_stderr,flexible-extract"] = "N/A"
    doc["start_time"], doc["end_time"] = 1234.5, 1240.1  # perf_counter readings, not dates
    return doc


def test_v043_era_shape():
    run = parse_doc(v043_era_doc(), name="acme__dummy-7b/results_2024-06-16T15-58-33.412754.json")
    assert run.format == "0.4" and run.harness_version == "0.4.x"
    assert run.model_name == "acme/dummy-7b"
    assert run.model_args == {"pretrained": "acme/dummy-7b", "revision": "abc123", "dtype": "bfloat16"}
    # no `date`: the file name's timestamp is used
    assert run.evaluated_at == dt.datetime(2024, 6, 16, 15, 58, 33, 412754, tzinfo=UTC)
    assert run.date_source == "file name"
    rows = by_key(run)
    assert rows[("mini_gen", "exact_match,flexible-extract")].stderr is None  # "N/A"
    assert rows[("mini_gen", "exact_match,flexible-extract")].value == 0.0
    group = rows[("mini_suite", "acc,none")]
    assert group.is_group and group.task_version is None
    assert group.n_shot == 2  # not in the file: taken from its subtasks, which agree


def test_group_n_shot_stays_unknown_when_subtasks_disagree():
    doc = v043_era_doc()
    doc["n-shot"]["mini_gen"] = 5
    rows = by_key(parse_doc(doc))
    assert rows[("mini_suite", "acc,none")].n_shot is None
    assert rows[("mini_gen", "exact_match,strict-match")].n_shot == 5


def test_v040_era_placeholder_key_and_group_only_under_groups():
    doc = v043_era_doc()
    for key in ("n-samples", "higher_is_better", "model_name", "model_name_sanitized", "start_time", "end_time"):
        doc.pop(key)
    doc["results"]["mini_mc"][" "] = " "  # 0.4.0-0.4.2 placeholder key
    doc["results"].pop("mini_suite")  # a group only listed under `groups`
    run = parse_doc(doc)
    rows = by_key(run)
    assert rows[("mini_suite", "acc,none")].is_group
    assert rows[("mini_mc", "acc,none")].higher_is_better is None
    assert rows[("mini_mc", "acc,none")].samples_original is None


def test_metric_only_group_without_scores_is_skipped():
    doc = reference_doc("v0.4.13-dummy-group")
    doc["results"]["umbrella"] = {"alias": "umbrella", "name": "umbrella", "sample_len": 14}  # no aggregate
    doc["group_subtasks"]["umbrella"] = ["mini_suite"]
    run = parse_doc(doc)
    assert "umbrella" not in run.tasks and len(run.rows) == 6


def test_limit_and_n_samples():
    doc = reference_doc("v0.4.13-dummy-group")
    doc["config"]["limit"] = 5.0
    doc["n-samples"]["mini_mc"]["effective"] = 5
    run = parse_doc(doc)
    assert run.limit == 5.0
    assert all(row.limit == 5.0 and row.used_limit for row in run.rows)
    doc["config"]["limit"] = None
    rows = by_key(parse_doc(doc))
    assert rows[("mini_mc", "acc,none")].used_limit  # fewer effective samples than original
    assert not rows[("mini_gen", "exact_match,strict-match")].used_limit


def test_nameless_model_args_give_an_empty_name_and_a_warning():
    doc = reference_doc("v0.4.13-dummy-group")
    doc["config"]["model_args"] = {}
    doc["model_name"] = "18fkbj3g"  # what 0.4.13 invents when model_args names no model
    run = parse_doc(doc)
    assert run.model_name == "" and all(row.model_name == "" for row in run.rows)
    assert any("18fkbj3g" in warning and "placeholder" in warning for warning in run.warnings)
    doc.pop("model_name")
    assert "does not name the model" in parse_doc(doc).warnings[0]


def test_model_name_priority_follows_the_harness():
    assert parse_model_args("pretrained=base/model,peft=org/adapter") == {"pretrained": "base/model",
                                                                        "peft": "org/adapter"}
    doc = reference_doc("v0.3.0")
    doc["config"]["model_args"] = "pretrained=base/model,peft=org/adapter,dtype=bfloat16"
    assert parse_doc(doc).model_name == "org/adapter"
    doc["config"]["model_args"] = "model=llama3.1:8b base_url=http://localhost:11434/v1/completions"
    assert parse_doc(doc).model_name == "llama3.1:8b"


def test_nan_stderr_becomes_unknown_with_a_warning():
    text = reference_file("v0.4.13-local-completions").read_text()
    text = text.replace('"acc_stderr,none": 0.16366341767699427,\n      "acc_norm,none"',
                        '"acc_stderr,none": NaN,\n      "acc_norm,none"', 1)
    assert "NaN" in text
    run = parse_harness_json(text)
    assert by_key(run)[("mini_mc", "acc,none")].stderr is None
    assert any("nan" in warning for warning in run.warnings)
    json.loads(rows_to_json(run))  # still strict JSON


def test_orphan_stderr_is_ignored_with_a_warning():
    doc = reference_doc("v0.3.0")
    doc["results"]["mini_gen"]["f1_stderr"] = 0.1
    run = parse_doc(doc)
    assert len(run.rows) == 3 and any("f1_stderr" in warning for warning in run.warnings)


def test_version_helpers():
    assert parse_harness_version("0.4.13") == (0, 4, 13)
    assert parse_harness_version("0.4.9.1") == (0, 4, 9)
    assert parse_harness_version("0.4.10.dev0") == (0, 4, 10)
    assert parse_harness_version("1.0") == (1, 0, None)
    with pytest.raises(ValueError):
        parse_harness_version("latest")
    assert file_name_time("results_2026-11-28T10-26-00.415394.json") == dt.datetime(2026, 11, 28, 10, 26, 0, 415394)
    assert file_name_time("out_2024-01-02T03-04-05.json") == dt.datetime(2024, 1, 2, 3, 4, 5)
    assert file_name_time("results.json") is None
    assert file_name_time("results_2026-13-45T10-26-00.json") is None


# ---------------------------------------------------------------------------------------------
# Refused files: each says where and what was expected


def _edit(folder: str, change):
    doc = reference_doc(folder)
    result = change(doc)
    return doc if result is None else result


MALFORMED = {
    "top level is a list": ("v0.3.0", lambda d: [d], None, "expected a JSON object at the top level"),
    "missing results": ("v0.3.0", lambda d: d.pop("results") and None, None, "missing key 'results'"),
    "missing config": ("v0.4.13-dummy-group", lambda d: d.pop("config") and None, None, "missing key 'config'"),
    "results not an object": ("v0.3.0", lambda d: d.update(results=[1, 2]), "results", "expected an object"),
    "task scores a list": ("v0.3.0", lambda d: d["results"].update(mini_mc=[0.5]), 'results["mini_mc"]',
                           "expected an object, found a list"),
    "metric a string (0.4)": ("v0.4.13-dummy-group", lambda d: d["results"]["mini_mc"].update({"acc,none": "0.25"}),
                              'results["mini_mc"]["acc,none"]', "expected a number, found the string '0.25'"),
    "metric a string (0.3)": ("v0.3.0", lambda d: d["results"]["mini_mc"].update(acc="high"),
                              'results["mini_mc"]["acc"]', "expected a number"),
    "metric a boolean": ("v0.4.13-dummy-group", lambda d: d["results"]["mini_mc"].update({"acc,none": True}),
                         'results["mini_mc"]["acc,none"]', "expected a number, found a boolean"),
    "metric null": ("v0.4.13-dummy-group", lambda d: d["results"]["mini_mc"].update({"acc,none": None}),
                    'results["mini_mc"]["acc,none"]', "expected a number, found null"),
    "metric key without filter": ("v0.4.13-dummy-group", lambda d: d["results"]["mini_mc"].update({"acc,": 0.5}),
                                  'results["mini_mc"]["acc,"]', "'metric,filter' key"),
    "stderr a word": ("v0.4.13-dummy-group",
                      lambda d: d["results"]["mini_mc"].update({"acc_stderr,none": "unknown"}),
                      'results["mini_mc"]["acc_stderr,none"]', 'expected a number, "N/A" or null'),
    "negative stderr": ("v0.3.0", lambda d: d["results"]["mini_mc"].update(acc_stderr=-0.1),
                        'results["mini_mc"]["acc_stderr"]', "non-negative standard error"),
    "n-shot a string": ("v0.4.13-dummy-group", lambda d: d["n-shot"].update(mini_mc="five"),
                        'n-shot["mini_mc"]', "non-negative whole number"),
    "n-shot negative": ("v0.4.13-dummy-group", lambda d: d["n-shot"].update(mini_mc=-1),
                        'n-shot["mini_mc"]', "non-negative whole number"),
    "num_fewshot a float (0.3)": ("v0.3.0", lambda d: d["config"].update(num_fewshot=2.5),
                                  'config["num_fewshot"]', "whole number"),
    "limit a string": ("v0.4.13-dummy-group", lambda d: d["config"].update(limit="5"), 'config["limit"]',
                       "null or a non-negative number"),
    "date a string": ("v0.4.13-dummy-group", lambda d: d.update(date="2026-11-28"), "date", "Unix time"),
    "date far in the future": ("v0.4.13-dummy-group", lambda d: d.update(date=1e12), "date", "Unix time"),
    "model_args a number": ("v0.3.0", lambda d: d["config"].update(model_args=7), 'config["model_args"]',
                            "expected a 'key=value,...' string or an object"),
    "model_args not key=value": ("v0.3.0", lambda d: d["config"].update(model_args="acme/dummy-7b"),
                                 'config["model_args"]', "expected 'key=value' pairs"),
    "model a number": ("v0.3.0", lambda d: d["config"].update(model=3), 'config["model"]', "expected a string"),
    "model_name a list": ("v0.4.13-dummy-group", lambda d: d.update(model_name=["x"]), "model_name",
                          "expected a string"),
    "versions entry an object": ("v0.4.13-dummy-group", lambda d: d["versions"].update(mini_mc={"v": 1}),
                                 'versions["mini_mc"]', "version number or string"),
    "group_subtasks not a list": ("v0.4.13-dummy-group", lambda d: d["group_subtasks"].update(mini_suite="x"),
                                  'group_subtasks["mini_suite"]', "list of task names"),
    "higher_is_better a string": ("v0.4.13-dummy-group",
                                  lambda d: d["higher_is_better"]["mini_mc"].update(acc="yes"),
                                  'higher_is_better["mini_mc"]["acc"]', "true, false or null"),
    "n-samples negative": ("v0.4.13-dummy-group", lambda d: d["n-samples"]["mini_mc"].update(effective=-3),
                           'n-samples["mini_mc"]["effective"]', "non-negative whole number"),
    "configs entry a string": ("v0.4.13-dummy-group", lambda d: d["configs"].update(mini_mc="x"),
                               'configs["mini_mc"]', "expected an object"),
    "empty task name": ("v0.3.0", lambda d: d["results"].update({"": {"acc": 0.5}}), 'results[""]',
                        "non-empty task name"),
    "task name too long": ("v0.3.0", lambda d: d["results"].update({"t" * 300: {"acc": 0.5}}),
                           'results["' + "t" * 79 + '…"]', "at most 255 characters"),
    "no scores at all": ("v0.4.13-dummy-group",
                         lambda d: d.update(results={"mini_mc": {"alias": "mini_mc"}}, groups={}),
                         "results", "no scores found; expected 'metric,filter' keys"),
    "0.3 scores in a file that says 0.4": ("v0.3.0", lambda d: d.update(lm_eval_version="0.4.9"), "results",
                                           "no scores found; expected 'metric,filter' keys"),
    "future major version": ("v0.4.13-dummy-group", lambda d: d.update(lm_eval_version="1.0.0"),
                             "lm_eval_version", "1.0.0 is not supported"),
    "future minor version": ("v0.4.13-dummy-group", lambda d: d.update(lm_eval_version="0.5.0"),
                             "lm_eval_version", "0.5.0 is not supported"),
    "too old a version": ("v0.4.13-dummy-group", lambda d: d.update(lm_eval_version="0.2.0"),
                          "lm_eval_version", "knows the 0.3.x and 0.4.x formats only"),
    "version not a string": ("v0.4.13-dummy-group", lambda d: d.update(lm_eval_version=0.4),
                             "lm_eval_version", "expected a version string"),
    "version not a version": ("v0.4.13-dummy-group", lambda d: d.update(lm_eval_version="next"),
                              "lm_eval_version", "expected a version such as"),
    "lighteval file": ("v0.3.0", lambda d: {"config_general": {"lighteval_sha": "x"},
                                            "results": {"harness|arc:challenge|25": {"acc": 0.5}}},
                       None, "lighteval results file"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_files_are_refused_with_where_and_what(name):
    folder, change, where, expected = MALFORMED[name]
    doc = _edit(folder, change)
    with pytest.raises(HarnessFileError) as caught:
        parse_doc(doc, name="bad.json")
    error = caught.value
    assert expected in error.message
    assert error.key_path == where
    assert error.source == "bad.json"
    assert str(error).startswith("bad.json")


def test_future_version_message_says_it_is_refused_not_guessed():
    doc = reference_doc("v0.4.13-dummy-group")
    doc["lm_eval_version"] = "1.2.3"
    with pytest.raises(HarnessFileError, match=r"1\.2\.3 is not supported.*refused rather than guessed"):
        parse_doc(doc)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_scores_are_refused(value):
    text = reference_file("v0.4.13-dummy-group").read_text().replace('"acc,none": 0.25,', f'"acc,none": {value},', 1)
    with pytest.raises(HarnessFileError) as caught:
        parse_harness_json(text)
    assert caught.value.key_path == 'results["mini_mc"]["acc,none"]'
    assert "finite number" in caught.value.message


def test_infinite_limit_is_refused():
    text = reference_file("v0.4.13-dummy-group").read_text().replace('"limit": null', '"limit": Infinity', 1)
    with pytest.raises(HarnessFileError, match="limit"):
        parse_harness_json(text)


@pytest.mark.parametrize("data, expected", [
    (b"\xff\xfe{}", "expected UTF-8 JSON text"),
    (b"{\"results\": ", "expected one JSON object"),
    (b"", "expected one JSON object"),
    (b'{"results": {}}\n{"results": {}}\n', "samples_*.jsonl"),
    (b'{"results": {"a": {"acc": 1}}, "results": {}}', "duplicate key 'results'"),
    (b'{"results": {"t": {"acc": ' + b"1" * 5000 + b"}}, \"config\": {}}", "ordinary size"),
])
def test_unreadable_text_is_refused(data, expected):
    with pytest.raises(HarnessFileError) as caught:
        parse_harness_json(data, source_name="upload.json")
    assert expected in caught.value.message


def test_size_cap():
    data = reference_file("v0.4.13-dummy-group").read_bytes()
    with pytest.raises(HarnessFileError, match=r"expected at most 1,000 bytes"):
        parse_harness_json(data, max_bytes=1000)
    with pytest.raises(HarnessFileError, match="larger than 1,000 bytes"):
        read_harness_file(io.BytesIO(data), max_bytes=1000)
    # The default cap: 20 MiB of padding after a valid document is refused before parsing.
    padded = data + b" " * (DEFAULT_MAX_BYTES - len(data) + 1)
    with pytest.raises(HarnessFileError, match="expected at most 20,971,520 bytes"):
        parse_harness_json(padded)


def test_size_cap_on_a_path(tmp_path):
    path = tmp_path / "results_big.json"
    path.write_bytes(b" " * 2048)
    with pytest.raises(HarnessFileError, match="2,048 bytes; expected at most 1,024"):
        read_harness_file(path, max_bytes=1024)
    with pytest.raises(HarnessFileError, match="cannot read the file"):
        read_harness_file(tmp_path / "missing.json")


def test_nesting_depth_cap():
    doc = reference_doc("v0.4.13-dummy-group")
    nested: dict = {}
    cursor = nested
    for _ in range(100):
        cursor["x"] = {}
        cursor = cursor["x"]
    doc["configs"]["mini_mc"]["metadata"]["deep"] = nested
    with pytest.raises(HarnessFileError, match="nested too deeply; expected at most 64 levels"):
        parse_doc(doc)
    assert parse_doc(doc, max_depth=200).rows  # the same file under a looser cap
    # Far deeper than Python's recursion limit: refused, not a crash.
    deep = b'{"results": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with pytest.raises(HarnessFileError, match="nested too deeply"):
        parse_harness_json(deep)


def test_no_nan_or_infinity_reaches_the_rows():
    for folder in ("v0.3.0", "v0.4.13-dummy-group", "v0.4.13-local-completions"):
        for row in read_harness_file(reference_file(folder)).rows:
            assert math.isfinite(row.value)
            assert row.stderr is None or math.isfinite(row.stderr)


def test_run_summary_masks_credentials_in_model_args():
    doc = reference_doc("v0.4.13-local-completions")
    doc["config"]["model_args"].update(auth_token="sk-secret", header={"Authorization": "Bearer x"},
                                       tokenized_requests=False)
    run = parse_doc(doc)
    summary = json.loads(json.dumps(run.to_dict(), allow_nan=False))
    assert summary["model_args"]["auth_token"] == "***" and summary["model_args"]["header"] == "***"
    assert summary["model_args"]["tokenizer_backend"] == "remote"  # not a secret
    assert summary["model_args"]["tokenized_requests"] is False
    assert "sk-secret" not in json.dumps(summary) and "sk-secret" not in rows_to_json(run)
    assert summary["model_name"] == "acme/fake-7b" and len(summary["rows"]) == 6
    assert "rows" not in run.to_dict(include_rows=False)
    assert run.model_args["auth_token"] == "sk-secret"  # the parsed arguments themselves are untouched
