"""Injected faults look like what each real server sends; output is deterministic; streams run concurrently."""
from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import ollama
import openai
import pytest
import text_generation
from text_generation import errors as tg_errors

from tests.fixtures.emulator import post_raw, sse_payloads
from workers.emulator import EmulatedModel, Fault

TARGET = "fault-target"  # 24 tokens, 400 tokens/s
USER = [{"role": "user", "content": "Tell me about tea."}]


def generation_request(emulator, kind: str, *, stream: bool = True) -> tuple[str, dict]:
    """(url, body) of a generation request for the fault target through protocol ``kind``."""
    if kind == "tgi":
        path = "/generate_stream" if stream else "/generate"
        return emulator.url_for("tgi", TARGET) + path, {"inputs": "Tea?", "parameters": {"max_new_tokens": 100}}
    if kind == "tgi-chat":
        return emulator.url_for("tgi", TARGET) + "/v1/chat/completions", {
            "model": "tgi", "messages": USER, "stream": stream}
    if kind == "ollama":
        return emulator.url_for("ollama", TARGET) + "/api/chat", {"model": TARGET, "messages": USER,
                                                                  "stream": stream}
    return emulator.url_for("openai", TARGET) + "/v1/chat/completions", {"model": TARGET, "messages": USER,
                                                                         "stream": stream}


def read_lines(url: str, body: dict, *, read_timeout: float = 5.0) -> tuple[list[str], Exception | None]:
    """Non-blank lines of a streamed response as they arrive, and the error that ended it, if any."""
    lines: list[str] = []
    try:
        with httpx.Client(timeout=httpx.Timeout(5.0, read=read_timeout)) as client:
            with client.stream("POST", url, json=body) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    if line:
                        lines.append(line)
    except httpx.HTTPError as exc:
        return lines, exc
    return lines, None


def raw_exchange(url: str, body: dict) -> tuple[bytes, BaseException | None]:
    """Send one request over a bare socket; return every byte received and how the connection ended."""
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode() + payload
    received = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(request)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError as exc:
            return received, exc
    return received, None


# ---------------------------------------------------------------- refuse and slow headers

@pytest.mark.parametrize("kind", ["tgi", "ollama", "openai"])
def test_refuse_resets_the_connection_without_a_byte(emulator_faults, kind):
    emulator_faults.set_fault(TARGET, Fault(kind="refuse"))
    url, body = generation_request(emulator_faults, kind)
    received, ended = raw_exchange(url, body)
    assert received == b""
    assert isinstance(ended, ConnectionResetError)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.post(url, json=body, timeout=5)


def test_refused_tgi_model_is_down_on_every_route_and_clients_see_a_connection_error(emulator_faults):
    emulator_faults.set_fault(TARGET, Fault(kind="refuse"))
    base = emulator_faults.url_for("tgi", TARGET)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.get(f"{base}/health", timeout=5)
    with pytest.raises(Exception) as caught:
        text_generation.Client(base).generate("Tea?")
    assert "Connection" in type(caught.value).__name__ or "connection" in str(caught.value).lower()
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, ConnectionError)):
        list(ollama.Client(host=emulator_faults.url_for("ollama", TARGET), timeout=5).chat(
            model=TARGET, messages=USER, stream=True))
    emulator_faults.set_fault(TARGET, None)
    assert httpx.get(f"{base}/health", timeout=5).status_code == 200


@pytest.mark.parametrize("kind", ["tgi", "ollama", "openai"])
def test_slow_headers_delays_the_status_line(emulator_faults, kind):
    emulator_faults.set_fault(TARGET, Fault(kind="slow_headers", delay_ms=300))
    url, body = generation_request(emulator_faults, kind, stream=False)
    started = time.perf_counter()
    response = post_raw(url, body)
    assert response.status_code == 200
    assert time.perf_counter() - started >= 0.3


# ---------------------------------------------------------------- status faults

def test_tgi_status_faults_use_tgi_shapes(emulator_faults):
    url, body = generation_request(emulator_faults, "tgi", stream=False)
    expected = {
        "401": (401, None),
        "422": (422, "validation"),
        "429": (429, {"error": "Model is overloaded", "error_type": "overloaded"}),
        "500": (500, {"error": "Incomplete generation", "error_type": "incomplete_generation"}),
    }
    for kind, (status, shape) in expected.items():
        emulator_faults.set_fault(TARGET, Fault(kind=kind))
        response = post_raw(url, body)
        assert response.status_code == status, kind
        if shape is None:
            assert response.content == b""
        elif isinstance(shape, str):
            assert response.json()["error_type"] == shape
            assert response.json()["error"].startswith("Input validation error: ")
        else:
            assert response.json() == shape
    client = text_generation.Client(emulator_faults.url_for("tgi", TARGET))
    for kind, error in (("429", tg_errors.OverloadedError), ("422", tg_errors.ValidationError)):
        emulator_faults.set_fault(TARGET, Fault(kind=kind))
        with pytest.raises(error):
            client.generate("Tea?")
        with pytest.raises(error):
            list(client.generate_stream("Tea?"))


def test_tgi_status_faults_on_streams_are_events_on_a_200(emulator_faults):
    stream_url, stream_body = generation_request(emulator_faults, "tgi")
    chat_url, chat_body = generation_request(emulator_faults, "tgi-chat")
    emulator_faults.set_fault(TARGET, Fault(kind="429"))
    response = post_raw(stream_url, stream_body)
    assert response.status_code == 200
    assert [json.loads(p) for p in sse_payloads(response.content)] == [
        {"error": "Model is overloaded", "error_type": "overloaded"}]
    chat = post_raw(chat_url, chat_body)
    payloads = sse_payloads(chat.content)
    assert chat.status_code == 200 and payloads[-1] == "[DONE]"
    assert json.loads(payloads[0]) == {"error": {"message": "Model is overloaded", "http_status_code": 422}}


def test_ollama_status_faults_use_ollama_statuses(emulator_faults):
    client = ollama.Client(host=emulator_faults.url_for("ollama", TARGET), timeout=5)
    expected = {"401": (401, "unauthorized"), "422": (400, "top_logprobs must be between 0 and 20"),
                "429": (503, "server busy, please try again.  maximum pending requests exceeded"),
                "500": (500, "llama runner process has terminated: exit status 2")}
    for kind, (status, message) in expected.items():
        emulator_faults.set_fault(TARGET, Fault(kind=kind))
        for stream in (False, True):
            with pytest.raises(ollama.ResponseError) as caught:
                result = client.chat(model=TARGET, messages=USER, stream=stream)
                if stream:
                    list(result)
            assert (caught.value.status_code, caught.value.error) == (status, message), (kind, stream)


def test_openai_status_faults_use_openai_errors(emulator_faults):
    client = openai.OpenAI(base_url=emulator_faults.url_for("openai", TARGET) + "/v1", api_key="-", max_retries=0)
    expected = {"401": openai.AuthenticationError, "422": openai.BadRequestError, "429": openai.RateLimitError,
                "500": openai.InternalServerError}
    for kind, error in expected.items():
        emulator_faults.set_fault(TARGET, Fault(kind=kind))
        with pytest.raises(error):
            list(client.chat.completions.create(model=TARGET, messages=USER, stream=True))
    emulator_faults.set_fault(TARGET, Fault(kind="500"))
    body = post_raw(*generation_request(emulator_faults, "openai")).json()
    assert body["error"]["type"] == "InternalServerError" and body["error"]["code"] == 500


def test_faults_touch_only_their_model(emulator_faults):
    emulator_faults.set_fault(TARGET, Fault(kind="500"))
    fine = post_raw(emulator_faults.url_for("ollama", TARGET) + "/api/chat",
                    {"model": "test-quick-1b", "messages": USER, "stream": False})
    assert fine.status_code == 200
    # Shared listing routes keep working: only requests naming the model fail.
    assert httpx.get(emulator_faults.url_for("openai", TARGET) + "/v1/models").status_code == 200


# ---------------------------------------------------------------- errors mid-stream

def test_tgi_error_mid_stream_is_a_generation_event_without_done(emulator_faults):
    emulator_faults.set_fault(TARGET, Fault(kind="error_mid_stream", after_tokens=5))
    lines, problem = read_lines(*generation_request(emulator_faults, "tgi"))
    assert problem is None
    events = [json.loads(line.removeprefix("data: ")) for line in lines]
    assert [e["index"] for e in events[:5]] == [1, 2, 3, 4, 5]
    assert set(events[5]) == {"error", "error_type"} and events[5]["error_type"] == "generation"
    assert len(events) == 6
    received = []
    with pytest.raises(tg_errors.GenerationError):
        for event in text_generation.Client(emulator_faults.url_for("tgi", TARGET)).generate_stream("Tea?"):
            received.append(event)
    assert len(received) == 5


def test_tgi_chat_error_mid_stream_is_followed_by_done(emulator_faults):
    emulator_faults.set_fault(TARGET, Fault(kind="error_mid_stream", after_tokens=3))
    lines, problem = read_lines(*generation_request(emulator_faults, "tgi-chat"))
    assert problem is None and lines[-1] == "data: [DONE]" and len(lines) == 5
    error = json.loads(lines[3].removeprefix("data: "))
    assert error["error"]["http_status_code"] == 422
    assert error["error"]["message"].startswith("Request failed during generation: ")


def test_ollama_error_mid_stream_is_a_last_error_line(emulator_faults):
    emulator_faults.set_fault(TARGET, Fault(kind="error_mid_stream", after_tokens=4))
    lines, problem = read_lines(*generation_request(emulator_faults, "ollama"))
    assert problem is None and len(lines) == 5
    assert all(json.loads(line)["done"] is False for line in lines[:4])
    assert json.loads(lines[4]) == {"error": "an error was encountered while running the model"}
    parts = []
    with pytest.raises(ollama.ResponseError) as caught:
        for part in ollama.Client(host=emulator_faults.url_for("ollama", TARGET), timeout=5).chat(
                model=TARGET, messages=USER, stream=True):
            parts.append(part)
    assert len(parts) == 4 and caught.value.status_code == -1


def test_openai_error_mid_stream_is_an_error_chunk_then_done(emulator_faults):
    emulator_faults.set_fault(TARGET, Fault(kind="error_mid_stream", after_tokens=2))
    lines, problem = read_lines(*generation_request(emulator_faults, "openai"))
    assert problem is None
    # role chunk, two tokens, the error, [DONE]
    assert len(lines) == 5 and lines[-1] == "data: [DONE]"
    error = json.loads(lines[3].removeprefix("data: "))["error"]
    assert error["type"] == "InternalServerError" and error["code"] == 500
    client = openai.OpenAI(base_url=emulator_faults.url_for("openai", TARGET) + "/v1", api_key="-", max_retries=0)
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model=TARGET, messages=USER, stream=True))


def test_error_mid_stream_on_non_stream_requests_is_an_error_status(emulator_faults):
    emulator_faults.set_fault(TARGET, Fault(kind="error_mid_stream", after_tokens=2))
    tgi = post_raw(*generation_request(emulator_faults, "tgi", stream=False))
    assert tgi.status_code == 424 and tgi.json()["error_type"] == "generation"
    assert post_raw(*generation_request(emulator_faults, "ollama", stream=False)).status_code == 500
    assert post_raw(*generation_request(emulator_faults, "openai", stream=False)).status_code == 500


# ---------------------------------------------------------------- stalls and malformed lines

@pytest.mark.parametrize(("kind", "expected_lines"), [("tgi", 3), ("tgi-chat", 3), ("ollama", 3), ("openai", 4)])
def test_stall_sends_some_tokens_then_nothing(emulator_faults, kind, expected_lines):
    emulator_faults.set_fault(TARGET, Fault(kind="stall", after_tokens=3))
    started = time.perf_counter()
    lines, problem = read_lines(*generation_request(emulator_faults, kind), read_timeout=0.4)
    assert isinstance(problem, httpx.ReadTimeout)
    assert len(lines) == expected_lines  # the openai stream also has its role chunk
    assert time.perf_counter() - started >= 0.4


def test_stall_with_a_delay_then_drops_the_connection(emulator_faults):
    emulator_faults.set_fault(TARGET, Fault(kind="stall", after_tokens=2, delay_ms=200))
    lines, problem = read_lines(*generation_request(emulator_faults, "ollama"))
    assert len(lines) == 2 and isinstance(problem, httpx.RemoteProtocolError)


def test_stall_on_a_non_stream_request_sends_no_status_line(emulator_faults):
    emulator_faults.set_fault(TARGET, Fault(kind="stall", after_tokens=1))
    url, body = generation_request(emulator_faults, "tgi", stream=False)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json=body, timeout=0.3)


@pytest.mark.parametrize(("kind", "good"), [("tgi", 2), ("tgi-chat", 2), ("ollama", 2), ("openai", 3)])
def test_malformed_line_after_some_tokens(emulator_faults, kind, good):
    emulator_faults.set_fault(TARGET, Fault(kind="malformed_line", after_tokens=2))
    lines, problem = read_lines(*generation_request(emulator_faults, kind))
    assert problem is None and len(lines) == good + 1
    payloads = [line.removeprefix("data: ") for line in lines]
    for payload in payloads[:good]:
        json.loads(payload)
    with pytest.raises(json.JSONDecodeError):
        json.loads(payloads[good])


def test_fault_api(emulator_faults):
    with pytest.raises(KeyError):
        emulator_faults.set_fault("no-such-model", Fault(kind="500"))
    with pytest.raises(ValueError):
        Fault(kind="explode")
    emulator_faults.set_fault(TARGET, Fault(kind="500"))
    emulator_faults.set_fault(TARGET, None)
    assert post_raw(*generation_request(emulator_faults, "openai", stream=False)).status_code == 200


def test_configured_fault_is_the_default(emulator):
    from workers.emulator import EmulatorServer

    model = EmulatedModel(name="broken-1b", ttft_ms=1, tokens_per_second=1000, max_tokens=4, fault=Fault(kind="429"))
    with EmulatorServer([model]) as server:
        url = server.url_for("ollama", "broken-1b") + "/api/chat"
        assert post_raw(url, {"model": "broken-1b", "messages": USER}).status_code == 503
        server.set_fault("broken-1b", None)
        assert post_raw(url, {"model": "broken-1b", "messages": USER}).status_code == 200
        server.reset_faults()
        assert post_raw(url, {"model": "broken-1b", "messages": USER}).status_code == 503


# ---------------------------------------------------------------- determinism and concurrency

def test_tgi_output_depends_only_on_seed_and_prompt(emulator):
    url = emulator.url_for("tgi", "demo-terse-7b") + "/generate"

    def text(prompt: str = "Tea?", **parameters) -> str:
        return post_raw(url, {"inputs": prompt, "parameters": {"max_new_tokens": 12, **parameters}}).json()[
            "generated_text"]

    assert text(do_sample=True, seed=7) == text(do_sample=True, seed=7)
    assert text(do_sample=True, seed=7) != text(do_sample=True, seed=8)
    assert text() == text(seed=99)  # greedy: no seed involved
    assert text("Coffee?") != text("Tea?")
    assert text(max_new_tokens=30).startswith(text(max_new_tokens=5))  # a shorter limit gives a prefix


def stream_text(kind: str, url: str, body: dict) -> str:
    """The text of one streamed answer, read the way each protocol delivers it."""
    lines, problem = read_lines(url, body, read_timeout=10)
    assert problem is None
    if kind == "ollama":
        return "".join(json.loads(line)["message"]["content"] for line in lines)
    payloads = [line.removeprefix("data: ") for line in lines]
    if kind == "tgi":
        return json.loads(payloads[-1])["generated_text"]
    assert payloads[-1] == "[DONE]"
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in map(json.loads, payloads[:-1]))


def test_twenty_concurrent_streams_all_complete_correctly(emulator):
    model = "demo-terse-7b"  # 40 ms to first token, 150 tokens/s, 48 tokens
    requests = {
        "tgi": (emulator.url_for("tgi", model) + "/generate_stream",
                {"inputs": "Tea?", "parameters": {"max_new_tokens": 100}}),
        "tgi-chat": (emulator.url_for("tgi", model) + "/v1/chat/completions",
                     {"model": "tgi", "messages": USER, "stream": True, "temperature": 0}),
        "ollama": (emulator.url_for("ollama", model) + "/api/chat", {"model": model, "messages": USER}),
        "openai": (emulator.url_for("openai", model) + "/v1/chat/completions",
                   {"model": model, "messages": USER, "stream": True, "seed": 3}),
    }
    expected = {kind: stream_text(kind, *request) for kind, request in requests.items()}
    assert all(expected.values())
    jobs = [list(requests)[i % len(requests)] for i in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda kind: (kind, stream_text(kind, *requests[kind])), jobs))
    assert len(results) == 20
    for kind, text in results:
        assert text == expected[kind], kind
