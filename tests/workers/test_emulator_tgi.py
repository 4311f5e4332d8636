"""The emulated TGI: real clients, validation texts, routes, headers, auth, and the run_emulator command."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.emulator import EMULATOR_API_KEY, post_raw, sse_payloads

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "test-quick-1b"


@pytest.fixture
def tgi(emulator):
    return emulator.url_for("tgi", MODEL)


def test_base_url_is_per_model(emulator):
    assert emulator.url_for("tgi", "demo-terse-7b") == f"{emulator.base_url}/tgi/demo-terse-7b"
    assert httpx.get(f"{emulator.base_url}/tgi/no-such-model/health").status_code == 404


# ---------------------------------------------------------------- the text_generation client (compat route)

def test_text_generation_generate_posts_to_the_compat_route(emulator, tgi):
    from text_generation import Client

    before = len(emulator.request_log)
    response = Client(tgi).generate("What is tea?", max_new_tokens=5)
    assert response.details.generated_tokens == 5 and response.details.finish_reason.value == "length"
    assert response.generated_text == "".join(t.text for t in response.details.tokens)
    method, path, body = emulator.request_log[before]
    assert (method, path) == ("POST", f"/tgi/{MODEL}") and body["stream"] is False
    assert body["parameters"]["details"] is True


def test_text_generation_generate_stream_ends_on_the_eos_event(tgi):
    from text_generation import Client

    events = list(Client(tgi).generate_stream("What is tea?", max_new_tokens=100))
    assert events[-1].token.special and events[-1].token.text == "</s>"
    assert events[-1].details.finish_reason.value == "eos_token"
    assert events[-1].details.generated_tokens == len(events) == 17  # 16 natural tokens + end-of-sequence
    assert all(e.generated_text is None and e.details is None for e in events[:-1])
    assert events[-1].generated_text == "".join(e.token.text for e in events[:-1])


def test_compat_route_wraps_the_non_stream_answer_in_a_list(tgi):
    body = post_raw(tgi, {"inputs": "Hi", "parameters": {"max_new_tokens": 3, "return_full_text": False}}).json()
    assert isinstance(body, list) and len(body) == 1 and set(body[0]) == {"generated_text"}
    # Without return_full_text the compat route follows the text-generation pipeline: prompt included.
    full = post_raw(tgi, {"inputs": "Hi", "parameters": {"max_new_tokens": 3}}).json()
    assert full[0]["generated_text"] == "Hi" + body[0]["generated_text"]
    stream = post_raw(tgi, {"inputs": "Hi", "parameters": {"max_new_tokens": 3}, "stream": True})
    assert stream.headers["content-type"] == "text/event-stream" and len(sse_payloads(stream.content)) == 3


# ---------------------------------------------------------------- /generate details and headers

def test_generate_omits_details_unless_asked_and_sends_timing_headers(tgi):
    response = post_raw(f"{tgi}/generate", {"inputs": "Hi", "parameters": {"max_new_tokens": 4}})
    assert response.json().keys() == {"generated_text"}
    for header in ("x-compute-type", "x-compute-time", "x-compute-characters", "x-total-time", "x-validation-time",
                   "x-queue-time", "x-inference-time", "x-time-per-token", "x-prompt-tokens", "x-generated-tokens"):
        assert header in response.headers, header
    assert response.headers["x-generated-tokens"] == "4" and response.headers["x-compute-characters"] == "2"
    assert re.fullmatch(r"\d+", response.headers["x-total-time"])


def test_stream_headers_and_details_only_when_requested(tgi):
    response = post_raw(f"{tgi}/generate_stream", {"inputs": "Hi", "parameters": {"max_new_tokens": 4}})
    headers = response.headers
    assert headers["content-type"] == "text/event-stream" and headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no" and headers["transfer-encoding"] == "chunked"
    assert "x-compute-type" in headers and "x-total-time" not in headers
    events = [json.loads(p) for p in sse_payloads(response.content)]
    assert events[-1]["generated_text"] is not None and events[-1]["details"] is None


def test_missing_parameters_means_sampling_with_a_reported_seed(tgi):
    details = post_raw(f"{tgi}/generate", {"inputs": "Hi", "parameters": {"details": True}}).json()["details"]
    assert details["seed"] is None  # parameters present: greedy
    sampled = post_raw(f"{tgi}/generate_stream", {"inputs": "Hi"}).content
    assert sampled  # parameters absent: TGI samples (do_sample true) ...
    seeded = post_raw(f"{tgi}/generate", {"inputs": "Hi", "parameters": {"do_sample": True, "details": True}})
    assert isinstance(seeded.json()["details"]["seed"], int)  # ... and reports the seed it used


def test_stop_sequences_stay_in_the_output(tgi):
    free = post_raw(f"{tgi}/generate", {"inputs": "Why tea?", "parameters": {"max_new_tokens": 10,
                                                                           "details": True}}).json()
    stop = free["details"]["tokens"][4]["text"].strip()
    cut = post_raw(f"{tgi}/generate", {"inputs": "Why tea?", "parameters": {
        "max_new_tokens": 10, "details": True, "stop": [stop]}}).json()
    assert cut["details"]["finish_reason"] == "stop_sequence"
    assert cut["generated_text"].endswith(stop) and free["generated_text"].startswith(cut["generated_text"])


# ---------------------------------------------------------------- validation

VALIDATION_CASES = [
    ({"temperature": 0}, "`temperature` must be strictly positive"),
    ({"temperature": 0.0, "do_sample": False}, "`temperature` must be strictly positive"),
    ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"top_p": 0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"top_k": 0}, "`top_k` must be strictly positive"),
    ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
    ({"repetition_penalty": 0}, "`repetition_penalty` must be strictly positive"),
    ({"frequency_penalty": 3}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
    ({"typical_p": 1.0}, "`typical_p` must be > 0.0 and < 1.0"),
    ({"top_n_tokens": 6}, "`top_n_tokens` must be >= 0 and <= 5. Given: 6"),
]


@pytest.mark.parametrize(("parameters", "message"), VALIDATION_CASES)
def test_validation_errors_on_generate_are_422_json(tgi, parameters, message):
    response = post_raw(f"{tgi}/generate", {"inputs": "Hi", "parameters": parameters})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": f"Input validation error: {message}", "error_type": "validation"}


@pytest.mark.parametrize(("parameters", "message"), VALIDATION_CASES[:4])
def test_validation_errors_on_generate_stream_are_200_with_an_error_event(tgi, parameters, message):
    response = post_raw(f"{tgi}/generate_stream", {"inputs": "Hi", "parameters": parameters})
    assert response.status_code == 200
    assert sse_payloads(response.content) == [json.dumps(
        {"error": f"Input validation error: {message}", "error_type": "validation"}, separators=(",", ":"))]


def test_input_length_validation_uses_the_context_window(emulator):
    url = emulator.url_for("tgi", "fault-target")  # context_length 2048
    # Since TGI 3.1.1 the check counts at most 1024 new tokens: 101 + min(2000, 1024) fits in 2048 ...
    short = post_raw(f"{url}/generate", {"inputs": "word" + " word" * 99, "parameters": {"max_new_tokens": 2000}})
    assert short.status_code == 200
    # ... while 1101 + 1024 does not; the message quotes the requested number.
    response = post_raw(f"{url}/generate", {"inputs": "word" + " word" * 1099, "parameters": {"max_new_tokens": 2000}})
    assert response.status_code == 422
    assert response.json()["error"] == ("Input validation error: `inputs` tokens + `max_new_tokens` must be <= "
                                        "2048. Given: 1101 `inputs` tokens and 2000 `max_new_tokens`")
    empty = post_raw(f"{url}/generate", {"inputs": "", "parameters": {}})
    assert empty.json()["error"] == "Input validation error: `inputs` cannot be empty"


def test_body_rejections_are_plain_text(tgi):
    bad_json = post_raw(f"{tgi}/generate", content=b'{"inputs": ', headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.headers["content-type"].startswith("text/plain")
    assert bad_json.text.startswith("Failed to parse the request body as JSON: ")
    no_type = post_raw(f"{tgi}/generate", content=b'{"inputs": "x"}', headers={"content-type": "text/plain"})
    assert no_type.status_code == 415 and no_type.text == "Expected request with `Content-Type: application/json`"
    missing = post_raw(f"{tgi}/generate", {"parameters": {}})
    assert missing.status_code == 422 and missing.headers["content-type"].startswith("text/plain")
    assert re.fullmatch(r"Failed to deserialize the JSON body into the target type: missing field `inputs` "
                        r"at line 1 column \d+", missing.text)
    negative = post_raw(f"{tgi}/generate", {"inputs": "x", "parameters": {"max_new_tokens": -1}})
    assert negative.status_code == 422 and "invalid value: integer `-1`, expected u32" in negative.text


def test_chat_rejects_a_bare_stop_string_as_plain_text(tgi):
    response = post_raw(f"{tgi}/v1/chat/completions", {"model": "tgi", "stop": "x",
                                                        "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 422 and response.headers["content-type"].startswith("text/plain")
    assert re.fullmatch(r"Failed to deserialize the JSON body into the target type: stop: invalid type: "
                        r"string \"x\", expected a sequence at line 1 column \d+", response.text)


def test_chat_validation_errors_stream_as_an_openai_like_event_then_done(tgi):
    response = post_raw(f"{tgi}/v1/chat/completions", {"model": "tgi", "stream": True, "top_p": 1.0,
                                                        "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200
    payloads = sse_payloads(response.content)
    assert json.loads(payloads[0]) == {"error": {"message": "Input validation error: `top_p` must be > 0.0 and < 1.0",
                                                 "http_status_code": 422}}
    assert payloads[1:] == ["[DONE]"]
    non_stream = post_raw(f"{tgi}/v1/chat/completions", {"model": "tgi", "top_p": 1.0,
                                                          "messages": [{"role": "user", "content": "hi"}]})
    assert non_stream.status_code == 422 and non_stream.json()["error_type"] == "validation"


def test_chat_temperature_zero_is_greedy_and_presence_penalty_is_accepted(tgi):
    body = {"model": "tgi", "max_tokens": 6, "messages": [{"role": "user", "content": "hi"}]}
    greedy = post_raw(f"{tgi}/v1/chat/completions", {**body, "temperature": 0, "seed": 1}).json()
    again = post_raw(f"{tgi}/v1/chat/completions", {**body, "temperature": 0, "seed": 2}).json()
    assert greedy["choices"][0]["message"] == again["choices"][0]["message"]  # greedy ignores the seed
    penalised = post_raw(f"{tgi}/v1/chat/completions", {**body, "presence_penalty": 0.5})
    assert penalised.status_code == 200


def test_chat_echoes_a_non_tgi_model_name_as_an_adapter(tgi):
    body = {"max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
    assert post_raw(f"{tgi}/v1/chat/completions", {**body, "model": "my-adapter"}).json()["model"] == "my-adapter"
    assert post_raw(f"{tgi}/v1/chat/completions", body).json()["model"] == MODEL


def test_chat_keeps_stop_strings_and_reports_stop_sequence(tgi):
    body = {"model": "tgi", "max_tokens": 8, "messages": [{"role": "user", "content": "Why tea?"}]}
    free = post_raw(f"{tgi}/v1/chat/completions", body).json()["choices"][0]["message"]["content"]
    stop = free.split()[2]
    cut = post_raw(f"{tgi}/v1/chat/completions", {**body, "stop": [stop]}).json()["choices"][0]
    assert cut["finish_reason"] == "stop_sequence" and stop in cut["message"]["content"]


# ---------------------------------------------------------------- the openai SDK on TGI's Messages API

def test_openai_sdk_streams_from_the_tgi_chat_route(tgi):
    import openai

    client = openai.OpenAI(base_url=f"{tgi}/v1", api_key="-")
    chunks = list(client.chat.completions.create(model="tgi", messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=100, stream=True))
    assert all(c.id == "" and c.choices[0].delta.role == "assistant" for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].choices[0].delta.content == ""
    whole = client.chat.completions.create(model="tgi", messages=[{"role": "user", "content": "hi"}], max_tokens=100)
    assert whole.choices[0].message.content == "".join(c.choices[0].delta.content for c in chunks)
    assert whole.usage.completion_tokens == len(chunks)


# ---------------------------------------------------------------- info routes and auth

def test_info_health_metrics_and_models(emulator):
    base = emulator.url_for("tgi", "demo-coder-34b")
    info = httpx.get(f"{base}/info").json()
    assert info["model_id"] == "demo-coder-34b" and info["max_total_tokens"] == 16384
    assert info["max_input_tokens"] == 16383 and info["max_stop_sequences"] == 4
    assert info["router"] == "text-generation-router"
    for path in ("/health", "", "/ping"):
        health = httpx.get(f"{base}{path}")
        assert health.status_code == 200 and health.content == b""
    metrics = httpx.get(f"{base}/metrics")
    assert metrics.status_code == 200 and re.search(r"^tgi_request_count \d+$", metrics.text, re.M)
    assert httpx.get(f"{base}/v1/models").json() == {"object": "list", "data": [
        {"id": "demo-coder-34b", "object": "model", "created": 0, "owned_by": "demo-coder-34b"}]}


def test_api_key_guards_generation_routes_only(emulator_with_key):
    base = emulator_with_key.url_for("tgi", MODEL)
    body = {"inputs": "Hi", "parameters": {"max_new_tokens": 2}}
    for path in ("/generate", "/generate_stream", "", "/v1/chat/completions"):
        denied = post_raw(f"{base}{path}", body)
        assert denied.status_code == 401 and denied.content == b"", path
    allowed = post_raw(f"{base}/generate", body, headers={"Authorization": f"Bearer {EMULATOR_API_KEY}"})
    assert allowed.status_code == 200
    # TGI compares the whole header without regard to case.
    assert post_raw(f"{base}/generate", body,
                    headers={"authorization": f"bearer {EMULATOR_API_KEY.upper()}"}).status_code == 200
    for path in ("/info", "/health", "/metrics", "/v1/models"):
        assert httpx.get(f"{base}{path}").status_code == 200, path


# ---------------------------------------------------------------- the run_emulator command

def test_run_emulator_command_serves_until_interrupted(tmp_path):
    config = tmp_path / "models.json"
    config.write_text(json.dumps([{"name": "cmd-model-1b", "style": "code", "ttft_ms": 1, "max_tokens": 8}]))
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "arena.settings"}
    env.setdefault("SECRET_KEY", "test-secret")
    proc = subprocess.Popen([sys.executable, "manage.py", "run_emulator", "--port", "0", "--config", str(config)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "openai" not in lines:
            line = proc.stdout.readline()
            if not line:
                break
            kind, _, rest = line.partition(": ")
            lines[kind] = rest.strip()
        assert "tgi" in lines, f"no tgi line; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        name, _, url = lines["tgi"].partition("=")
        assert name == "cmd-model-1b" and re.fullmatch(r"http://127\.0\.0\.1:\d+/tgi/cmd-model-1b", url)
        assert lines["ollama"].endswith("/ollama") and lines["openai"].endswith("/openai")
        health = httpx.get(f"{url}/health", timeout=5)
        assert health.status_code == 200 and health.content == b""
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
