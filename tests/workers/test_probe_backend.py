"""probe_backend: in-process through call_command, and as a real process (exit code, stderr)."""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

ROOT = Path(__file__).resolve().parents[2]
MODEL = "probe-terse-7b"
API_KEY = "probe-api-key-123"
KINDS = ["tgi", "ollama", "openai"]


@pytest.fixture(scope="module")
def emu():
    from workers.emulator import EmulatedModel, EmulatorServer

    server = EmulatorServer(models=[EmulatedModel(name=MODEL, style="terse", ttft_ms=20, tokens_per_second=400.0,
                                                  max_tokens=16, seed=0)], host="127.0.0.1", port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def locked_emu():
    """An emulator that wants a bearer token."""
    from workers.emulator import EmulatedModel, EmulatorServer

    server = EmulatorServer(models=[EmulatedModel(name=MODEL, style="terse", ttft_ms=5, tokens_per_second=1000.0,
                                                  max_tokens=8, seed=0)], host="127.0.0.1", port=0, api_key=API_KEY)
    server.start()
    yield server
    server.stop()


def model_args(kind: str) -> list[str]:
    return [] if kind == "tgi" else ["--model", MODEL]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("kind", KINDS)
def test_json_output_is_one_object(emu, kind):
    out = io.StringIO()
    call_command("probe_backend", "--kind", kind, "--url", emu.url_for(kind, MODEL), *model_args(kind),
                 "--prompt", "Hello", "--max-new-tokens", "8", "--json", stdout=out)
    result = json.loads(out.getvalue())
    assert set(result) == {"text", "finish_reason", "output_tokens", "ttft_ms", "tpot_ms"}
    assert result["text"].strip()
    assert result["finish_reason"] in ("stop", "length")
    assert 1 <= result["output_tokens"] <= 9
    assert result["ttft_ms"] > 0


@pytest.mark.parametrize("kind", KINDS)
def test_plain_output_streams_text_then_timing(emu, kind):
    out = io.StringIO()
    call_command("probe_backend", "--kind", kind, "--url", emu.url_for(kind, MODEL), *model_args(kind),
                 "--max-new-tokens", "6", stdout=out)
    text = out.getvalue()
    assert "time to first token:" in text and "time per output token:" in text and "tokens:" in text
    assert text.split("-" * 40)[0].strip()  # the answer came first


def test_completion_api_on_tgi(emu):
    out = io.StringIO()
    call_command("probe_backend", "--kind", "tgi", "--url", emu.url_for("tgi", MODEL), "--api", "completion",
                 "--json", stdout=out)
    assert json.loads(out.getvalue())["text"].strip()


def test_token_from_the_environment(locked_emu, monkeypatch):
    url = locked_emu.url_for("ollama", MODEL)
    with pytest.raises(CommandError, match=r"\(401\)"):
        call_command("probe_backend", "--kind", "ollama", "--url", url, "--model", MODEL, "--json",
                     stdout=io.StringIO())
    monkeypatch.setenv("PROBE_TOKEN", API_KEY)
    out = io.StringIO()
    call_command("probe_backend", "--kind", "ollama", "--url", url, "--model", MODEL, "--token-env", "PROBE_TOKEN",
                 "--json", stdout=out)
    assert json.loads(out.getvalue())["text"]
    monkeypatch.delenv("PROBE_TOKEN")
    with pytest.raises(CommandError, match="PROBE_TOKEN is not set"):
        call_command("probe_backend", "--kind", "ollama", "--url", url, "--model", MODEL, "--token-env", "PROBE_TOKEN")


def test_model_is_required_off_tgi():
    with pytest.raises(CommandError, match="--model is required"):
        call_command("probe_backend", "--kind", "openai", "--url", "http://127.0.0.1:1")


def run_command(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "probe_backend", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("kind", KINDS)
def test_process_success(emu, kind):
    done = run_command("--kind", kind, "--url", emu.url_for(kind, MODEL), *model_args(kind), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["text"].strip() and result["output_tokens"] >= 1


@pytest.mark.parametrize("kind", KINDS)
def test_process_failure_is_one_stderr_line_and_nonzero_exit(kind):
    done = run_command("--kind", kind, "--url", f"http://127.0.0.1:{free_port()}", *model_args(kind), "--json")
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "Could not connect" in lines[0] and "refused" in lines[0].lower()


def test_process_auth_failure_does_not_print_the_token(locked_emu):
    done = run_command("--kind", "openai", "--url", locked_emu.url_for("openai", MODEL), "--model", MODEL,
                       "--token-env", "PROBE_TOKEN", env={"PROBE_TOKEN": "wrong-token-value-987"})
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1
    assert "(401)" in done.stderr and "wrong-token-value-987" not in done.stderr + done.stdout
