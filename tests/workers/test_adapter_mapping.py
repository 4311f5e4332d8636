"""Parameter mapping, prompt rendering, stop trimming and error mapping, without a server."""
from __future__ import annotations

import pytest

from workers.backends import BackendError, DecodingParams, Endpoint, Message, get_adapter
from workers.backends.ollama import ollama_options
from workers.backends.streamtools import StopTrimmer, normalise_finish
from workers.backends.tgi import render_prompt
from workers.backends.transport import detail_from_body, error_for_status, error_in_stream

MESSAGES = [Message("system", "Be terse."), Message("user", "Hi"), Message("assistant", "Hello."),
            Message("user", "Name a colour.")]


def tgi(api: str = "chat", model_id: str = "tgi") -> Endpoint:
    return Endpoint(kind="tgi", base_url="http://tgi", model_id=model_id, api=api)


def test_render_prompt_is_a_plain_transcript():
    assert render_prompt(MESSAGES) == "Be terse.\n\nUser: Hi\n\nAssistant: Hello.\n\nUser: Name a colour.\n\nAssistant:"
    # A final assistant message is continued, not answered.
    assert render_prompt([Message("user", "Hi"), Message("assistant", "Hel")]) == "User: Hi\n\nAssistant: Hel"


def test_tgi_generate_greedy_sends_no_sampling_knobs():
    params = DecodingParams(greedy=True, temperature=0.7, top_p=0.9, top_k=40, seed=1, repetition_penalty=1.1)
    _, body = get_adapter("tgi").request_for(tgi("completion"), MESSAGES, params)
    assert body["parameters"] == {"max_new_tokens": 512, "details": True, "return_full_text": False, "stop": [],
                                  "do_sample": False, "repetition_penalty": 1.1}


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_tgi_generate_never_sends_a_temperature_of_zero_or_less(temperature):
    _, body = get_adapter("tgi").request_for(tgi("completion"), MESSAGES, DecodingParams(temperature=temperature))
    assert "temperature" not in body["parameters"] and body["parameters"]["do_sample"] is False


@pytest.mark.parametrize("top_p, sent", [(1.0, None), (1.5, None), (0.0, None), (0.95, 0.95), (None, None)])
def test_tgi_top_p_of_one_or_more_is_dropped(top_p, sent):
    for api in ("chat", "completion"):
        path, body = get_adapter("tgi").request_for(tgi(api), MESSAGES, DecodingParams(top_p=top_p))
        fields = body["parameters"] if api == "completion" else body
        assert fields.get("top_p") == sent, (api, path)


def test_tgi_sampling_parameters_on_generate():
    params = DecodingParams(temperature=0.8, top_p=0.9, top_k=50, seed=7, max_new_tokens=9, stop=("###",))
    path, body = get_adapter("tgi").request_for(tgi("completion", "my-lora"), MESSAGES, params)
    assert path == "/generate_stream"
    assert body["parameters"] == {"max_new_tokens": 9, "details": True, "return_full_text": False, "stop": ["###"],
                                  "do_sample": True, "temperature": 0.8, "top_p": 0.9, "top_k": 50, "seed": 7,
                                  "adapter_id": "my-lora"}


def test_tgi_chat_greedy_is_temperature_zero_and_never_presence_penalty():
    path, body = get_adapter("tgi").request_for(tgi(), MESSAGES, DecodingParams(greedy=True, top_p=0.5,
                                                                                repetition_penalty=1.2))
    assert path == "/v1/chat/completions"
    assert body["temperature"] == 0 and "top_p" not in body
    assert "presence_penalty" not in body and "repetition_penalty" not in body
    assert body["stream_options"] == {"include_usage": True} and body["model"] == "tgi"
    assert body["messages"][0] == {"role": "system", "content": "Be terse."}


def test_tgi_more_than_four_stop_strings_is_a_clear_error():
    params = DecodingParams(stop=("a", "b", "c", "d", "e"))
    for api in ("chat", "completion"):
        with pytest.raises(BackendError) as caught:
            next(get_adapter("tgi").stream(tgi(api), MESSAGES, params))
        assert (caught.value.code, caught.value.retryable) == ("validation", False)
        assert str(caught.value) == "TGI accepts at most 4 stop strings; this decoding preset has 5."


def test_ollama_options():
    assert ollama_options(DecodingParams(greedy=True, top_k=5, max_new_tokens=20)) == {
        "num_predict": 20, "temperature": 0, "seed": 0}
    assert ollama_options(DecodingParams(greedy=True, seed=42))["seed"] == 42
    assert ollama_options(DecodingParams(temperature=0.6, top_p=0.9, top_k=30, repetition_penalty=1.1, seed=3,
                                         stop=("</s>", "\nUser:"), max_new_tokens=50)) == {
        "num_predict": 50, "temperature": 0.6, "top_k": 30, "top_p": 0.9, "seed": 3, "repeat_penalty": 1.1,
        "stop": ["</s>", "\nUser:"]}


def test_openai_body():
    endpoint = Endpoint(kind="openai", base_url="http://vllm:8000", model_id="qwen")
    path, body = get_adapter("openai").request_for(endpoint, MESSAGES, DecodingParams(top_p=1.0, top_k=20, seed=1))
    assert path == "/v1/chat/completions"
    assert body["model"] == "qwen" and body["temperature"] == 0.7 and body["top_k"] == 20 and body["seed"] == 1
    assert "top_p" not in body and "presence_penalty" not in body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_completion_mode_and_missing_model_are_refused_off_tgi(kind):
    with pytest.raises(BackendError, match="only available on TGI"):
        next(get_adapter(kind).stream(Endpoint(kind=kind, base_url="http://x", model_id="m", api="completion"),
                                      MESSAGES, DecodingParams()))
    with pytest.raises(BackendError, match="No model name"):
        next(get_adapter(kind).stream(Endpoint(kind=kind, base_url="http://x", model_id=""), MESSAGES,
                                      DecodingParams()))


def test_stop_trimmer_holds_back_prefixes_and_drops_the_final_stop():
    trimmer = StopTrimmer(("</answer>", "###"))
    shown = [trimmer.feed(t) for t in ["The", " end", " <", "/ans", "wer", ">"]]
    assert "".join(shown) == "The end "
    assert trimmer.finish(may_end_with_stop=True) == ""
    trimmer = StopTrimmer(("###",))
    assert trimmer.feed("a #") == "a "
    assert trimmer.feed("# b") == "## b"
    assert trimmer.finish(may_end_with_stop=True) == ""
    trimmer = StopTrimmer(("###",))
    assert trimmer.feed("cut at ##") == "cut at "
    assert trimmer.finish(may_end_with_stop=False) == "##"  # a length cut: nothing to drop
    assert StopTrimmer(()).feed("x") == "x"


def test_finish_reasons_are_normalised():
    assert [normalise_finish(r) for r in ["eos_token", "stop_sequence", "stop", "length", None, "tool_calls"]] == [
        "stop", "stop", "stop", "length", "stop", "stop"]


ENDPOINT = Endpoint(kind="tgi", base_url="http://tgi", model_id="tgi")


@pytest.mark.parametrize("status, body, code, retryable", [
    (401, b"", "auth", False),
    (403, b'{"error":"forbidden"}', "auth", False),
    (404, b"Not Found", "not_found", False),
    (400, b"Failed to parse the request body as JSON: trailing comma", "validation", False),
    (413, b"length limit exceeded", "validation", False),
    (415, b"Expected request with `Content-Type: application/json`", "validation", False),
    (422, b'{"error":"Input validation error: `temperature` must be strictly positive","error_type":"validation"}',
     "validation", False),
    (422, b'{"error":"Template error: template not found","error_type":"template_error"}', "template", False),
    (424, b'{"error":"Request failed during generation: boom","error_type":"generation"}', "generation", True),
    (429, b'{"error":"Model is overloaded","error_type":"overloaded"}', "overloaded", True),
    (500, b'{"error":"Incomplete generation","error_type":"incomplete_generation"}', "server", True),
    (502, b"<html>Bad Gateway</html>", "server", True),
    (503, b'{"error":"unhealthy","error_type":"healthcheck"}', "overloaded", True),
])
def test_status_mapping(status, body, code, retryable):
    detail, error_type = detail_from_body(body)
    error = error_for_status(ENDPOINT, status, detail, error_type)
    assert (error.code, error.retryable, error.status) == (code, retryable, status)


def test_status_message_is_plain():
    detail, error_type = detail_from_body(
        b'{"error":"Input validation error: `top_p` must be > 0.0 and < 1.0","error_type":"validation"}')
    assert str(error_for_status(ENDPOINT, 422, detail, error_type)) == (
        "TGI rejected the request (422): Input validation error: `top_p` must be > 0.0 and < 1.0")


@pytest.mark.parametrize("payload, code, retryable", [
    ({"error": "Request failed during generation: x", "error_type": "generation"}, "generation", True),
    ({"error": "Incomplete generation stream", "error_type": "incomplete_generation_stream"}, "generation", True),
    ({"error": "Input validation error: x", "error_type": "validation"}, "validation", False),
    ({"error": {"message": "Template error: x", "http_status_code": 422}}, "template", False),
    ({"error": {"message": "Request failed during generation: x", "http_status_code": 422}}, "generation", True),
    ({"error": "an error was encountered while running the model"}, "generation", True),
    ({"error": {"message": "The model `x` does not exist.", "type": "NotFoundError", "code": 404}}, "not_found", False),
])
def test_in_stream_error_mapping(payload, code, retryable):
    error = error_in_stream(ENDPOINT, payload)
    assert (error.code, error.retryable) == (code, retryable)
