"""The emulated OpenAI-compatible (vLLM-style) server: the openai SDK, SSE chunk layout, errors, auth."""
from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.fixtures.emulator import EMULATOR_API_KEY, post_raw, sse_payloads

MODEL = "test-quick-1b"
USER = [{"role": "user", "content": "What is green tea?"}]


@pytest.fixture
def base(emulator):
    return emulator.url_for("openai", MODEL)


@pytest.fixture
def client(base):
    return openai.OpenAI(base_url=f"{base}/v1", api_key="-", max_retries=0)


def test_stream_through_the_sdk(client):
    chunks = list(client.chat.completions.create(model=MODEL, messages=USER, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    assert all(c.id.startswith("chatcmpl-") and c.id == chunks[0].id for c in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 17  # 16 tokens + end-of-sequence
    assert chunks[-2].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole = client.chat.completions.create(model=MODEL, messages=USER)
    assert whole.choices[0].message.content == text and whole.choices[0].finish_reason == "stop"
    assert whole.id.startswith("chatcmpl-") and whole.usage.completion_tokens == 17


def test_raw_chunk_layout(base):
    response = post_raw(f"{base}/v1/chat/completions", {"model": MODEL, "messages": USER, "stream": True,
                                                         "max_tokens": 4, "stream_options": {"include_usage": True}})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(response.content)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    role, tokens, usage = chunks[0], chunks[1:-1], chunks[-1]
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(list(c["choices"][0]["delta"]) == ["content"] for c in tokens)  # content-only deltas
    assert [c["choices"][0]["finish_reason"] for c in tokens] == [None, None, None, "length"]
    assert tokens[-1]["choices"][0]["stop_reason"] is None
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": usage["usage"]["prompt_tokens"],
                                                         "total_tokens": usage["usage"]["prompt_tokens"] + 4,
                                                         "completion_tokens": 4}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)


def test_no_usage_chunk_unless_asked(base):
    payloads = sse_payloads(post_raw(f"{base}/v1/chat/completions", {"model": MODEL, "messages": USER,
                                                                     "stream": True, "max_tokens": 2}).content)
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert len(chunks) == 3 and all(c["choices"] and "usage" not in c for c in chunks)


def test_stop_strings_are_left_out_and_named_in_stop_reason(client):
    free = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=10).choices[0].message.content
    stop = free.split()[2]
    cut = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=10, stop=stop)  # a bare string is fine
    choice = cut.choices[0]
    assert choice.finish_reason == "stop" and stop not in choice.message.content
    assert choice.model_extra["stop_reason"] == stop
    assert free.startswith(choice.message.content)


def test_unknown_model_is_404_with_vllm_message(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert caught.value.status_code == 404
    assert caught.value.body == {"message": "The model `gpt-4o` does not exist.", "type": "NotFoundError",
                                 "param": "model", "code": 404}


def test_sampling_parameter_errors_are_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=USER, temperature=-1)
    assert caught.value.body["message"] == "temperature must be non-negative, got -1.0."
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=USER, max_tokens=5000)
    assert caught.value.body["message"].startswith("This model's maximum context length is 2048 tokens.")


def test_seed_and_temperature_decide_the_output(client):
    def answer(**kwargs) -> str:
        return client.chat.completions.create(model="demo-terse-7b", messages=USER, max_tokens=12,
                                              **kwargs).choices[0].message.content

    assert answer(seed=5) == answer(seed=5) != answer(seed=6)
    assert answer(temperature=0, seed=5) == answer(temperature=0, seed=6)


def test_models_and_health(emulator, client, base):
    listed = client.models.list()
    assert {m.id for m in listed.data} == {m.name for m in emulator.models}
    entry = next(m for m in listed.data if m.id == "demo-coder-34b")
    assert entry.owned_by == "vllm" and entry.model_extra["max_model_len"] == 16384
    health = httpx.get(f"{base}/health")
    assert health.status_code == 200 and health.content == b""


def test_api_key_guards_every_v1_route(emulator_with_key):
    base = emulator_with_key.url_for("openai", MODEL)
    denied = httpx.get(f"{base}/v1/models")
    assert denied.status_code == 401 and denied.json() == {"error": "Unauthorized"}
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).chat.completions.create(
            model=MODEL, messages=USER)
    allowed = openai.OpenAI(base_url=f"{base}/v1", api_key=EMULATOR_API_KEY, max_retries=0)
    assert allowed.chat.completions.create(model=MODEL, messages=USER, max_tokens=2).choices[0].message.content
    assert httpx.get(f"{base}/health").status_code == 200
