"""Importing lm-evaluation-harness results files: the service and the import_harness command."""
from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import pytest
from django.core.management import ManagementUtility, call_command
from django.core.management.base import CommandError

from arena.models import ArenaModel
from leaderboard.harness import read_harness_file, rows_to_json
from leaderboard.harness.services import HarnessImportError, contender_resolve, harness_import, harness_import_many
from leaderboard.models import HarnessFile, HarnessResult
from tests.leaderboard.test_harness_parser import RESULTS_DIR, reference_doc, reference_file
from tests.leaderboard.test_snapshots import arena  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("require_postgres")]

FOLDERS = ("v0.3.0", "v0.4.13-dummy-group", "v0.4.13-local-completions")


def contender(arena, display_name: str, backend_model_id: str | None = None, **fields) -> ArenaModel:
    return ArenaModel.objects.create(display_name=display_name, server=arena.server, preset=arena.preset,
                                     backend_model_id=backend_model_id or display_name, **fields)


@pytest.fixture
def registered(arena):
    """dummy is found by its backend model id, fake by an alias: the two models of the reference files."""
    return {
        "dummy": contender(arena, "Dummy 7B", "acme/dummy-7b"),
        "fake": contender(arena, "Fake 7B", "fake:7b", aliases=["Fake", "acme/fake-7b"]),
    }


def write_doc(tmp_path: Path, doc, name: str = "results_2026-11-28T10-26-00.415394.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


@pytest.fixture(autouse=True)
def keep_test_connection(monkeypatch):
    # A command run from argv closes every database connection when it ends, which would end the
    # test's transaction; here the command shares that transaction instead.
    monkeypatch.setattr("django.core.management.base.connections.close_all", lambda: None)


def run_command(*argv: str) -> tuple[int, str, str]:
    """The command as from a shell (exit status, stdout, stderr), inside the test's database."""
    out, err = io.StringIO(), io.StringIO()
    status = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            ManagementUtility(["manage.py", "import_harness", *argv]).execute()
        except SystemExit as exit_:
            status = exit_.code or 0
    return status, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------------------------------
# The real files


def test_all_three_reference_files_import(registered, django_user_model):
    admin = django_user_model.objects.create_user("importer", is_staff=True)
    reports = [harness_import(path_or_bytes=reference_file(folder), user=admin) for folder in FOLDERS]
    assert [report.contender for report in reports] == ["Dummy 7B", "Dummy 7B", "Fake 7B"]
    assert all(report.created and not report.already_imported for report in reports)
    assert HarnessFile.objects.count() == 3
    for folder, report in zip(FOLDERS, reports):
        path = reference_file(folder)
        run = read_harness_file(path)
        stored = HarnessFile.objects.get(sha256=run.source_sha256)
        assert stored.pk == report.file_id
        assert stored.file_name == path.name  # the base name, not the importing machine's path
        assert stored.size_bytes == path.stat().st_size
        assert (stored.harness_version, stored.file_format) == (run.harness_version, run.format)
        assert stored.harness_model_name == run.model_name
        assert stored.imported_by == admin and stored.evaluated_at == run.evaluated_at
        rows = {(r.task, r.metric, r.filter): r for r in stored.results.all()}
        assert len(rows) == len(run.rows)
        for row in run.rows:
            result = rows[(row.task, row.metric, row.filter)]
            assert (result.value, result.stderr, result.n_shot, result.is_group, result.used_limit) == (
                row.value, row.stderr, row.n_shot, row.is_group, row.used_limit)
    fake = HarnessFile.objects.get(contender=registered["fake"])
    assert fake.model_source == "local-completions"
    assert fake.model_args["base_url"] == "http://127.0.0.1:8012/v1/completions"
    known = fake.results.get(task="mini_gen", filter="strict-match")
    assert known.value == pytest.approx(4 / 6) and known.stderr == pytest.approx(0.210818510677892)
    assert HarnessFile.objects.get(harness_version="0.3.x").results.get(task="mini_mc", metric="acc").n_shot == 2


def test_reimport_changes_nothing_and_says_so(registered):
    path = reference_file("v0.4.13-dummy-group")
    first = harness_import(path_or_bytes=path)
    again = harness_import(path_or_bytes=path.read_bytes(), name="renamed.json")
    assert first.created and not again.created and again.already_imported
    assert again.file_id == first.file_id and again.contender == "Dummy 7B"
    assert "already imported" in again.summary()
    assert HarnessFile.objects.count() == 1 and HarnessResult.objects.count() == len(first.rows)
    assert HarnessFile.objects.get().file_name == path.name  # the first name stays

    status, out, err = run_command(str(path))
    assert status == 0 and "already imported" in out and "nothing changed" in out
    assert HarnessFile.objects.count() == 1


def test_secrets_in_model_args_are_not_stored(registered, tmp_path):
    doc = reference_doc("v0.4.13-local-completions")
    doc["config"]["model_args"]["auth_token"] = "sk-very-secret"
    harness_import(path_or_bytes=write_doc(tmp_path, doc))
    stored = HarnessFile.objects.get()
    assert stored.model_args["auth_token"] == "***" and "sk-very-secret" not in json.dumps(stored.model_args)


def test_limit_runs_are_stored_as_such(registered, tmp_path):
    doc = reference_doc("v0.4.13-dummy-group")
    doc["config"]["limit"] = 5.0
    doc["n-samples"]["mini_mc"]["effective"] = 5
    harness_import(path_or_bytes=write_doc(tmp_path, doc))
    stored = HarnessFile.objects.get()
    assert stored.limit == 5.0
    assert all(result.used_limit for result in stored.results.all())


# ---------------------------------------------------------------------------------------------
# Mapping to contenders


def test_mapping_by_display_name_backend_id_alias_and_case(arena, tmp_path):
    by_display = contender(arena, "acme/dummy-7b", "served-name")
    by_backend = contender(arena, "Fake", "acme/fake-7b")
    assert contender_resolve(model_name="acme/dummy-7b") == by_display
    assert contender_resolve(model_name="acme/fake-7b") == by_backend
    aliased = contender(arena, "Llama", "llama3.1:8b", aliases=["meta-llama/Llama-3.1-8B-Instruct"])
    assert contender_resolve(model_name="meta-llama/Llama-3.1-8B-Instruct") == aliased
    assert contender_resolve(model_name="META-LLAMA/llama-3.1-8b-instruct") == aliased  # case folded last
    # An exact display name wins over another contender's backend id.
    contender(arena, "Other", "acme/dummy-7b")
    assert contender_resolve(model_name="acme/dummy-7b") == by_display


def test_explicit_contender_wins(arena, registered):
    other = contender(arena, "Renamed model", "whatever")
    report = harness_import(path_or_bytes=reference_file("v0.3.0"), contender="Renamed model")
    assert report.contender_id == other.pk
    report = harness_import(path_or_bytes=reference_file("v0.4.13-dummy-group"), contender=other.pk)
    assert report.contender_id == other.pk
    report = harness_import(path_or_bytes=reference_file("v0.4.13-local-completions"), contender=other)
    assert report.contender_id == other.pk
    assert set(HarnessFile.objects.values_list("contender_id", flat=True)) == {other.pk}
    # Re-importing for another contender than the stored one is refused, not silently ignored.
    with pytest.raises(HarnessImportError, match="already imported for contender 'Renamed model'"):
        harness_import(path_or_bytes=reference_file("v0.3.0"), contender=registered["dummy"])
    with pytest.raises(HarnessImportError, match="no contender named 'nobody'"):
        harness_import(path_or_bytes=reference_file("v0.3.0"), contender="nobody")


def test_unknown_model_is_an_error_and_imports_nothing(arena):
    contender(arena, "Someone else", "other/model")
    with pytest.raises(HarnessImportError, match="no contender matches model 'acme/dummy-7b'"):
        harness_import(path_or_bytes=reference_file("v0.4.13-dummy-group"))
    assert HarnessFile.objects.count() == 0 and HarnessResult.objects.count() == 0
    status, out, err = run_command(str(reference_file("v0.4.13-dummy-group")))
    assert status != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "no contender matches model 'acme/dummy-7b'" in lines[0]
    assert "nothing was imported" in lines[0]
    assert HarnessFile.objects.count() == 0


def test_ambiguous_model_is_an_error(arena):
    # The same served model with two decoding presets: two contenders, one backend model id.
    contender(arena, "Dummy greedy", "acme/dummy-7b")
    from arena.models import DecodingPreset

    ArenaModel.objects.create(display_name="Dummy sampled", server=arena.server, backend_model_id="acme/dummy-7b",
                              preset=DecodingPreset.objects.create(name="sampled"))
    with pytest.raises(HarnessImportError, match="several contenders"):
        harness_import(path_or_bytes=reference_file("v0.3.0"))
    assert HarnessFile.objects.count() == 0
    assert harness_import(path_or_bytes=reference_file("v0.3.0"), contender="Dummy sampled").created


def test_file_without_a_model_name_needs_an_explicit_contender(arena, tmp_path):
    doc = reference_doc("v0.4.13-dummy-group")
    doc["config"]["model_args"] = "dtype=float32"
    path = write_doc(tmp_path, doc)
    with pytest.raises(HarnessImportError, match="does not name the model"):
        harness_import(path_or_bytes=path)
    target = contender(arena, "Chosen", "chosen")
    assert harness_import(path_or_bytes=path, contender="Chosen").contender_id == target.pk


# ---------------------------------------------------------------------------------------------
# Malformed files import nothing


def _missing_results(doc):
    doc.pop("results")


def _missing_config(doc):
    doc.pop("config")


def _results_a_list(doc):
    doc["results"] = [doc["results"]]


def _value_a_string(doc):
    doc["results"]["mini_mc"]["acc,none"] = "high"


def _n_shot_a_string(doc):
    doc["n-shot"]["mini_mc"] = "two"


def _model_args_a_number(doc):
    doc["config"]["model_args"] = 7


def _future_version(doc):
    doc["lm_eval_version"] = "0.5.0"


def _next_major_version(doc):
    doc["lm_eval_version"] = "1.0.0"


def _no_scores(doc):
    doc["results"] = {"mini_mc": {"alias": "mini_mc"}}
    doc.pop("groups", None)


MALFORMED = {
    "missing results": (_missing_results, "missing key 'results'"),
    "missing config": (_missing_config, "missing key 'config'"),
    "results a list": (_results_a_list, "results"),
    "value a string": (_value_a_string, "acc,none"),
    "n-shot a string": (_n_shot_a_string, "n-shot"),
    "model_args a number": (_model_args_a_number, "model_args"),
    "future version": (_future_version, "0.5.0 is not supported"),
    "next major version": (_next_major_version, "1.0.0 is not supported"),
    "no scores": (_no_scores, "no scores found"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_files_import_nothing(registered, tmp_path, case):
    spoil, expected = MALFORMED[case]
    doc = copy.deepcopy(reference_doc("v0.4.13-dummy-group"))
    spoil(doc)
    path = write_doc(tmp_path, doc)
    with pytest.raises(HarnessImportError) as raised:
        harness_import(path_or_bytes=path)
    assert expected in str(raised.value)
    with pytest.raises(HarnessImportError):
        harness_import(path_or_bytes=path, dry_run=True)
    status, out, err = run_command(str(path), "--dry-run", "--json")
    assert status != 0 and out == "" and expected in err and len(err.strip().splitlines()) == 1
    assert HarnessFile.objects.count() == 0 and HarnessResult.objects.count() == 0


@pytest.mark.parametrize("text", ["", "not json", '{"results": {}} {"results": {}}', "[1, 2]", '{"a": 1, "a": 2}'])
def test_files_that_are_not_one_results_object(registered, tmp_path, text):
    with pytest.raises(HarnessImportError):
        harness_import(path_or_bytes=write_doc(tmp_path, text))
    with pytest.raises(HarnessImportError):
        harness_import(path_or_bytes=text.encode())
    assert HarnessFile.objects.count() == 0


def test_missing_path_is_a_clear_error(registered, tmp_path):
    status, out, err = run_command(str(tmp_path / "nope.json"))
    assert status != 0 and "cannot read the file" in err and len(err.strip().splitlines()) == 1


def test_several_files_are_one_transaction(registered, tmp_path):
    good = [reference_file(folder) for folder in FOLDERS]
    bad = write_doc(tmp_path, {"results": {}, "config": {}, "lm_eval_version": "9.9"})
    with pytest.raises(HarnessImportError, match="9.9"):
        harness_import_many(sources=[*good, bad])
    assert HarnessFile.objects.count() == 0 and HarnessResult.objects.count() == 0
    status, out, err = run_command(*map(str, good), str(bad))
    assert status != 0 and out == "" and "nothing was imported" in err
    assert HarnessFile.objects.count() == 0
    status, out, err = run_command(*map(str, good))
    assert status == 0 and out.count("imported for contender") == 3
    assert HarnessFile.objects.count() == 3


# ---------------------------------------------------------------------------------------------
# Dry run and the command's output


def test_dry_run_json_prints_the_rows_and_writes_nothing(registered):
    paths = [reference_file(folder) for folder in FOLDERS]
    status, out, err = run_command(*map(str, paths), "--dry-run", "--json")
    assert status == 0 and err == ""
    printed = json.loads(out)
    expected = [row for path in paths for row in json.loads(rows_to_json(read_harness_file(path)))]
    assert printed == expected
    assert {item["model_name"] for item in printed} == {"acme/dummy-7b", "acme/fake-7b"}
    assert HarnessFile.objects.count() == 0 and HarnessResult.objects.count() == 0


def test_dry_run_without_a_contender_shows_the_rows_and_exits_non_zero(arena):
    path = reference_file("v0.4.13-dummy-group")
    status, out, err = run_command(str(path), "--dry-run", "--json")
    assert status == 1
    assert "a real import would fail: no contender for" in err
    assert json.loads(out) == json.loads(rows_to_json(read_harness_file(path)))
    assert "warning:" in err and "a real import would fail" in err
    assert HarnessFile.objects.count() == 0


def test_command_model_option_and_json_report(arena, registered):
    target = contender(arena, "Picked", "picked")
    out = io.StringIO()
    call_command("import_harness", str(reference_file("v0.3.0")), "--model", "Picked", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert len(report) == 1 and report[0]["contender"] == "Picked" and report[0]["created"]
    assert report[0]["rows"] == 3 and report[0]["harness_version"] == "0.3.x"
    assert HarnessFile.objects.get().contender == target
    with pytest.raises(CommandError, match="no contender named 'Nobody'"):
        call_command("import_harness", str(reference_file("v0.4.13-dummy-group")), "--model", "Nobody")
    assert HarnessFile.objects.count() == 1


def test_plain_dry_run_summary(registered):
    out = io.StringIO()
    call_command("import_harness", str(reference_file("v0.4.13-local-completions")), "--dry-run", stdout=out)
    assert "would be imported for contender 'Fake 7B' (dry run)" in out.getvalue()
    assert HarnessFile.objects.count() == 0


def test_reference_folder_is_present():
    assert {path.name for path in RESULTS_DIR.iterdir()} >= set(FOLDERS)
