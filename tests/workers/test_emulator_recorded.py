"""The emulated TGI against responses recorded from real TGI servers.

The recordings (``shared/reference/recorded``) are TGI's own integration-test snapshots. The raw
ones are the wire JSON; the parsed ones went through a client library first, so they are compared
after the same client parses the emulator's answer. Keys are compared as sets (the snapshots are
key-sorted) and values by JSON type.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.fixtures.emulator import post_raw, sse_payloads

RECORDED = Path(__file__).resolve().parents[3] / "shared" / "reference" / "recorded"
MODEL = "test-quick-1b"  # short natural answers (16 tokens) at 1000 tokens/s


def recorded(name: str):
    path = RECORDED / f"tgi__{name}.json"
    if not path.is_file():
        pytest.fail(f"recorded TGI response missing: {path} (expected the reference recordings under "
                    f"{RECORDED}; they are copied from TGI's integration-test snapshots)", pytrace=False)
    return json.loads(path.read_text(encoding="utf-8"))


def shape(value):
    """Structure and JSON types, without the values; lists are described by their first element."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "null"


def assert_list_uniform(items: list) -> None:
    shapes = {json.dumps(shape(item), sort_keys=True) for item in items}
    assert len(shapes) == 1, f"list elements differ in shape: {shapes}"


def drop_key(value, key: str):
    if isinstance(value, dict):
        return {k: drop_key(v, key) for k, v in value.items() if k != key}
    if isinstance(value, list):
        return [drop_key(v, key) for v in value]
    return value


@pytest.fixture
def tgi(emulator):
    return emulator.url_for("tgi", MODEL)


# ---------------------------------------------------------------- raw recordings

def test_generate_with_details_matches_the_raw_lora_recording(tgi):
    real = recorded("test_lora_mistral__test_lora_mistral_with_dbpedia_adapter")
    response = post_raw(f"{tgi}/generate", {"inputs": "Name a number.", "parameters": {
        "max_new_tokens": 64, "details": True, "adapter_id": "dbpedia"}})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    ours = response.json()
    assert shape(ours) == shape(real)
    assert_list_uniform(ours["details"]["tokens"])
    # Both end on end-of-sequence: the special token is listed but left out of the text.
    for body in (real, ours):
        details = body["details"]
        assert details["finish_reason"] == "eos_token" and details["seed"] is None and details["prefill"] == []
        assert details["generated_tokens"] == len(details["tokens"])
        last = details["tokens"][-1]
        assert last["special"] is True and last["text"] == "</s>"
        assert body["generated_text"] == "".join(t["text"] for t in details["tokens"] if not t["special"])
        assert "best_of_sequences" not in details and "top_tokens" not in details


def test_non_stream_chat_matches_the_raw_continue_final_message_recording(tgi):
    real = recorded("test_continue_final_message__test_llama_completion_single_prompt")
    response = post_raw(f"{tgi}/v1/chat/completions", {"model": "tgi", "max_tokens": 5, "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Which mammals are large?"},
        {"role": "assistant", "content": "Both an elephant and"}]})
    assert response.status_code == 200
    ours = response.json()
    assert shape(ours) == shape(real)
    assert list(ours) == ["object", "id", "created", "model", "system_fingerprint", "choices", "usage"]
    assert ours["id"] == real["id"] == ""
    assert ours["object"] == real["object"] == "chat.completion"
    assert re.fullmatch(r"\d+\.\d+\.\d+(-dev\d+)?-native", ours["system_fingerprint"])
    assert ours["choices"][0]["finish_reason"] == real["choices"][0]["finish_reason"] == "length"
    assert ours["usage"]["completion_tokens"] == 5
    usage = ours["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert ours["model"] == MODEL  # "tgi" means the served model


def test_stream_chat_chunks_match_the_raw_json_schema_stream_recording(tgi):
    real = recorded("test_json_schema_constrain__test_json_schema_stream")
    response = post_raw(f"{tgi}/v1/chat/completions", {"model": "tgi", "stream": True, "max_tokens": 500,
                                                        "messages": [{"role": "user", "content": "Describe tea."}]})
    assert response.status_code == 200
    payloads = sse_payloads(response.content)
    assert payloads[-1] == "[DONE]" and "[DONE]" not in payloads[:-1]
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert_list_uniform(real[:-1])
    for chunk in chunks[:-1]:
        assert shape(chunk) == shape(real[0]), chunk
    assert shape(chunks[-1]) == shape(real[-1])
    for chunk in chunks:
        assert chunk["id"] == "" and chunk["usage"] is None
        assert chunk["choices"][0]["delta"]["role"] == "assistant"
        assert set(chunk["choices"][0]["delta"]) == {"role", "content"}
    # Like the recording, an answer that ends on end-of-sequence closes with an empty "stop" chunk.
    for last in (real[-1], chunks[-1]):
        assert last["choices"][0]["finish_reason"] == "stop" and last["choices"][0]["delta"]["content"] == ""
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_stream_chat_with_usage_matches_the_hfhub_recording(tgi):
    # The hub client added "tool_calls": null to every delta; the server never sends it.
    real = drop_key(recorded("test_completion_prompts__test_chat_hfhub_usage"), "tool_calls")
    response = post_raw(f"{tgi}/v1/chat/completions", {
        "model": "tgi", "stream": True, "max_tokens": 500, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "Say OK!"}]})
    payloads = sse_payloads(response.content)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    for chunk in chunks[:-2]:
        assert shape(chunk) == shape(real[0])
    assert shape(chunks[-2]) == shape(real[-2])  # the finish chunk
    assert shape(chunks[-1]) == shape(real[-1])  # the usage chunk
    for stream in (real, chunks):
        usage_chunk, finish_chunk, token_chunks = stream[-1], stream[-2], stream[:-1]
        assert usage_chunk["choices"] == [] and all(c["usage"] is None for c in token_chunks)
        assert finish_chunk["choices"][0]["finish_reason"] == "stop"
        assert finish_chunk["choices"][0]["delta"]["content"] == ""
        # One chunk per generated token, the end-of-sequence token included.
        assert usage_chunk["usage"]["completion_tokens"] == len(token_chunks)


def test_completions_match_the_raw_completion_recording(tgi):
    real = recorded("test_completion_prompts__test_flash_llama_completion_single_prompt")
    response = post_raw(f"{tgi}/v1/completions", {"model": "tgi", "prompt": "What is Deep Learning?",
                                                   "max_tokens": 10, "seed": 0})
    assert response.status_code == 200
    ours = response.json()
    assert shape(ours) == shape(real)
    assert ours["object"] == "text_completion" and ours["choices"][0]["finish_reason"] == "length"
    assert ours["usage"]["completion_tokens"] == real["usage"]["completion_tokens"] == 10


def test_generate_stream_framing_has_no_done_sentinel(tgi):
    response = post_raw(f"{tgi}/generate_stream", {"inputs": "Hello", "parameters": {"max_new_tokens": 40,
                                                                                    "details": True}})
    assert response.headers["content-type"] == "text/event-stream"
    payloads = sse_payloads(response.content)
    assert "[DONE]" not in payloads
    events = [json.loads(p) for p in payloads]
    assert [e["index"] for e in events] == list(range(1, len(events) + 1))
    assert list(events[0]) == ["index", "token", "generated_text", "details"]
    assert set(events[-1]["details"]) == {"finish_reason", "generated_tokens", "seed", "input_length"}


# ---------------------------------------------------------------- recordings parsed by client libraries

def test_text_generation_client_dump_matches_the_flash_llama_recordings(tgi):
    from text_generation import Client

    simple = recorded("test_flash_llama__test_flash_llama_simple")
    bloom = recorded("test_bloom_560m__test_bloom_560m")
    response = Client(tgi).generate("Test request", max_new_tokens=10, decoder_input_details=True)
    ours = response.model_dump(mode="json")
    assert shape(drop_key(ours, "prefill")) == shape(drop_key(simple, "prefill"))
    assert ours["details"]["finish_reason"] == simple["details"]["finish_reason"] == "length"
    assert ours["details"]["seed"] is simple["details"]["seed"] is None  # greedy runs report no seed
    # With decoder_input_details a prefill is listed, and its first logprob is null, as in bloom's.
    assert shape(ours["details"]["prefill"]) == shape(bloom["details"]["prefill"])
    assert ours["details"]["prefill"][0]["logprob"] is None is bloom["details"]["prefill"][0]["logprob"]


def test_stop_sequence_and_full_text_match_the_all_params_recording(tgi):
    from text_generation import Client

    real = recorded("test_flash_llama__test_flash_llama_all_params")
    client = Client(tgi)
    knobs = dict(max_new_tokens=10, repetition_penalty=1.2, return_full_text=True, temperature=0.5, top_p=0.9,
                 top_k=10, truncate=5, typical_p=0.9, watermark=True, seed=0)
    free = client.generate("Test request", **knobs)
    stop = free.details.tokens[3].text.strip()
    ours = client.generate("Test request", stop_sequences=[stop], **knobs).model_dump(mode="json")
    assert shape(ours) == shape(real)
    for body in (real, ours):
        assert body["details"]["finish_reason"] == "stop_sequence" and body["details"]["seed"] == 0
        assert body["generated_text"].startswith("Test request")  # return_full_text
    assert real["generated_text"].endswith("test") and ours["generated_text"].endswith(stop)  # the stop stays


def test_text_generation_chat_dump_matches_the_chat_llama_recording(tgi):
    from text_generation import Client
    from text_generation.types import Message

    real = recorded("test_chat_llama__test_flash_llama_simple")
    ours = Client(tgi).chat(messages=[Message(role="system", content="You are helpful."),
                                      Message(role="user", content="What is the weather like in Brooklyn?")],
                            max_tokens=8, seed=42).model_dump(mode="json")
    assert shape(ours) == shape(real)
    assert ours["choices"][0]["finish_reason"] == "length" and ours["usage"]["completion_tokens"] == 8


def test_openai_sdk_dump_covers_the_openai_usage_recording(tgi):
    import openai

    real = recorded("test_completion_prompts__test_chat_openai_usage")
    client = openai.OpenAI(base_url=f"{tgi}/v1", api_key="-")
    stream = client.chat.completions.create(model="tgi", messages=[{"role": "user", "content": "Say OK!"}],
                                            max_tokens=500, stream=True, stream_options={"include_usage": True})
    ours = [chunk.model_dump(mode="json") for chunk in stream]

    def covers(mine, theirs, where="chunk") -> None:
        # The SDK version here may add fields; every recorded field must be there with the same type.
        if isinstance(theirs, dict):
            assert isinstance(mine, dict), where
            for key, value in theirs.items():
                assert key in mine, f"{where}.{key} missing"
                if value is not None and mine[key] is not None:
                    covers(mine[key], value, f"{where}.{key}")
        elif isinstance(theirs, list) and theirs:
            covers(mine[0], theirs[0], f"{where}[0]")
        else:
            assert shape(mine) == shape(theirs), where

    for chunk in ours[:-1]:
        covers(chunk, real[0])
    covers(ours[-1], real[-1])
    assert ours[-1]["choices"] == [] and ours[-1]["usage"]["completion_tokens"] == len(ours) - 1
