"""The emulated Ollama: the real ``ollama`` client, NDJSON framing, metrics, stop strings, errors."""
from __future__ import annotations

import json
import time
from datetime import datetime

import httpx
import ollama
import pytest

from tests.fixtures.emulator import EMULATOR_API_KEY, post_raw
from workers.emulator import EmulatedModel, EmulatorServer

MODEL = "test-quick-1b"
USER = [{"role": "user", "content": "What is green tea?"}]


@pytest.fixture
def host(emulator):
    return emulator.url_for("ollama", MODEL)


@pytest.fixture
def client(host):
    # The base URL has a path prefix (/ollama); the client keeps it.
    return ollama.Client(host=host, timeout=10)


def ndjson(raw: bytes) -> list[dict]:
    text = raw.decode("utf-8")
    assert text.endswith("\n") and "\n\n" not in text, "NDJSON must have no blank lines"
    return [json.loads(line) for line in text.splitlines()]


def test_client_keeps_the_path_prefix_of_the_host(emulator, client):
    before = len(emulator.request_log)
    client.chat(model=MODEL, messages=USER)
    assert emulator.request_log[before].path == "/ollama/api/chat"


def test_chat_stream_through_the_client(client):
    parts = list(client.chat(model=MODEL, messages=USER, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    final = parts[-1]
    assert final.done_reason == "stop" and final.message.content == ""
    assert final.eval_count == len(parts) - 1 == 16  # one line per token; end-of-sequence sends no line
    whole = client.chat(model=MODEL, messages=USER)
    assert whole.message.content == "".join(p.message.content for p in parts)
    assert whole.done and whole.eval_count == 16


def test_generate_list_and_show_through_the_client(emulator, client):
    answer = client.generate(model=MODEL, prompt="Why is the sky blue?", options={"num_predict": 5})
    assert answer.done_reason == "length" and answer.eval_count == 5 and answer.response
    assert answer.context and all(isinstance(i, int) for i in answer.context)
    streamed = list(client.generate(model=MODEL, prompt="Why is the sky blue?", options={"num_predict": 5},
                                    stream=True))
    assert "".join(p.response for p in streamed) == answer.response
    listed = client.list()
    assert {m.model for m in listed.models} == {m.name for m in emulator.models}
    entry = next(m for m in listed.models if m.model == "demo-markdown-13b")
    assert entry.details.parameter_size == "13B" and entry.details.family == "demo" and entry.size > 0
    shown = client.show("demo-coder-34b")
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 16384 and shown.details.parameter_size == "34B"


def test_unknown_model_is_a_404_response_error(client):
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="nope:7b", messages=USER)
    assert caught.value.status_code == 404 and caught.value.error == "model 'nope:7b' not found"
    with pytest.raises(ollama.ResponseError) as caught:
        client.show("nope")
    assert caught.value.status_code == 404


def test_raw_stream_framing_and_final_line(host):
    response = post_raw(f"{host}/api/chat", {"model": MODEL, "messages": USER})  # stream defaults to true
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = ndjson(response.content)
    for line in lines[:-1]:
        assert list(line) == ["model", "created_at", "message", "done"] and line["done"] is False
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    for key in ("total_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"):
        assert isinstance(final[key], int) and final[key] > 0, key
    assert "load_duration" not in final  # zero (model already loaded, no load time configured): omitted
    for line in lines:
        assert datetime.fromisoformat(line["created_at"]).tzinfo is not None


def test_non_stream_is_one_json_object(host):
    response = post_raw(f"{host}/api/chat", {"model": MODEL, "messages": USER, "stream": False})
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert body["done"] is True and body["message"]["content"] and body["eval_count"] == 16


def test_model_name_is_echoed_exactly_as_sent(emulator):
    server = EmulatorServer([EmulatedModel(name="tagged:latest", ttft_ms=1, tokens_per_second=1000, max_tokens=3)])
    with server:
        response = post_raw(f"{server.url_for('ollama', 'tagged:latest')}/api/chat",
                            {"model": "tagged", "messages": USER, "stream": False})
        assert response.status_code == 200 and response.json()["model"] == "tagged"


def test_metrics_report_the_configured_timings(emulator):
    model = next(m for m in emulator.models if m.name == "demo-terse-7b")
    url = emulator.url_for("ollama", model.name)
    body = post_raw(f"{url}/api/generate", {"model": model.name, "prompt": "Why?", "stream": False,
                                            "options": {"num_predict": 6}}).json()
    assert body["prompt_eval_duration"] == int(model.ttft_ms * 1e6)  # the TTFT
    assert body["eval_count"] == 6
    assert body["eval_duration"] / body["eval_count"] == pytest.approx(1e9 / model.tokens_per_second)  # TPOT
    assert body["total_duration"] >= body["prompt_eval_duration"] + body["eval_duration"] - 5e6


def test_cold_load_is_reported_once_and_again_after_unload():
    model = EmulatedModel(name="cold-1b", ttft_ms=5, tokens_per_second=500, max_tokens=4, load_ms=60)
    with EmulatorServer([model]) as server:
        url = f"{server.url_for('ollama', 'cold-1b')}/api/chat"
        body = {"model": "cold-1b", "messages": USER, "stream": False}
        started = time.perf_counter()
        first = post_raw(url, body).json()
        assert time.perf_counter() - started >= 0.06
        assert first["load_duration"] == 60_000_000
        assert "load_duration" not in post_raw(url, {**body, "keep_alive": 0}).json()
        assert post_raw(url, body).json()["load_duration"] == 60_000_000  # unloaded by keep_alive 0
        load = post_raw(url, {"model": "cold-1b"}).json()  # only a model: a load request
        assert load["done"] is True and load["done_reason"] == "load" and load["message"]["content"] == ""
        ps = httpx.get(f"{server.url_for('ollama', 'cold-1b')}/api/ps").json()
        assert [m["name"] for m in ps["models"]] == ["cold-1b"]


def test_stop_strings_are_left_out(client):
    free = client.chat(model=MODEL, messages=USER, options={"num_predict": 10}).message.content
    stop = free.split()[2]
    cut = client.chat(model=MODEL, messages=USER, options={"num_predict": 10, "stop": [stop]})
    assert cut.done_reason == "stop" and stop not in cut.message.content
    assert free.startswith(cut.message.content) and free[len(cut.message.content):].lstrip().startswith(stop)
    streamed = "".join(p.message.content for p in client.chat(model=MODEL, messages=USER, stream=True,
                                                               options={"num_predict": 10, "stop": [stop]}))
    assert streamed == cut.message.content


def test_seed_and_temperature_decide_the_output(client):
    def answer(**options) -> str:
        return client.generate(model="demo-terse-7b", prompt="Tea?", options={"num_predict": 12, **options}).response

    assert answer(seed=1) == answer(seed=1)
    assert answer(seed=1) != answer(seed=2)
    assert answer(temperature=0, seed=1) == answer(temperature=0, seed=2)  # greedy ignores the seed


def test_errors_before_output(host):
    assert post_raw(f"{host}/api/chat", content=b"").json() == {"error": "missing request body"}
    missing = post_raw(f"{host}/api/chat", {"messages": USER})
    assert missing.status_code == 400 and missing.json() == {"error": "model is required"}
    bad_option = post_raw(f"{host}/api/chat", {"model": MODEL, "messages": USER, "options": {"num_predict": "x"}})
    assert bad_option.status_code == 500
    assert bad_option.json() == {"error": 'option "num_predict" must be of type integer'}
    malformed = post_raw(f"{host}/api/chat", content=b"{nope")
    assert malformed.status_code == 400 and "invalid character" in malformed.json()["error"]


def test_version_root_and_pull(host):
    assert httpx.get(f"{host}/api/version").json() == {"version": "0.33.0"}
    root = httpx.get(host)
    assert root.status_code == 200 and root.text == "Ollama is running"
    assert httpx.get(f"{host}/api/nothing").status_code == 404
    pulled = ndjson(post_raw(f"{host}/api/pull", {"model": MODEL}).content)
    assert pulled[0] == {"status": "pulling manifest"} and pulled[-1] == {"status": "success"}
    unknown = ndjson(post_raw(f"{host}/api/pull", {"model": "nope"}).content)
    assert unknown == [{"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}]


def test_api_key_guards_generation(emulator_with_key):
    host = emulator_with_key.url_for("ollama", MODEL)
    with pytest.raises(ollama.ResponseError) as caught:
        ollama.Client(host=host, timeout=10).chat(model=MODEL, messages=USER)
    assert caught.value.status_code == 401 and caught.value.error == "unauthorized"
    allowed = ollama.Client(host=host, timeout=10, headers={"Authorization": f"Bearer {EMULATOR_API_KEY}"})
    assert allowed.chat(model=MODEL, messages=USER).done
    assert httpx.get(f"{host}/api/tags").status_code == 200
