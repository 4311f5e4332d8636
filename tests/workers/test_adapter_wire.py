"""Adapters against exact wire bytes: recorded TGI streams and protocol quirks, served by a scripted loopback server.

The emulator covers ordinary behaviour; these tests pin down byte-level details the emulator
does not (or should not have to) reproduce: real recorded chunks, ``data:`` without a space,
keep-alive comments, text/plain error bodies, trickling servers.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.fixtures.readers import READERS, items_of
from workers.backends import BackendError, DecodingParams, Delta, Endpoint, Finish, Message, get_adapter
from workers.backends.transport import MAX_DETAIL_CHARS

RECORDED = Path(__file__).resolve().parents[3] / "shared" / "reference" / "recorded"
USER = [Message("user", "hi")]


# Every stream below is read by both readers (see tests.fixtures.readers).
READER = "thread"


@pytest.fixture(autouse=True, params=READERS)
def _reader(request):
    global READER
    READER = request.param
    yield
    READER = "thread"
TOKEN = "sk-wire-test-token-1234"


@dataclass
class Reply:
    status: int = 200
    content_type: str = "text/event-stream"
    # bytes/str are written as one chunk each; a float sleeps that many seconds.
    parts: list = field(default_factory=list)
    header_delay_s: float = 0.0
    chunked: bool = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # Small writes must leave at once, as a real streaming server's do.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.server.requests.append((self.command, self.path, json.loads(raw) if raw else None, dict(self.headers)))
        reply = self.server.routes.get((self.command, self.path))
        if reply is None:
            reply = Reply(status=404, content_type="text/plain", parts=["no route"])
        if reply.header_delay_s:
            time.sleep(reply.header_delay_s)
        self.send_response(reply.status)
        self.send_header("content-type", reply.content_type)
        if reply.chunked:
            self.send_header("transfer-encoding", "chunked")
        else:
            body = b"".join(p.encode() if isinstance(p, str) else p for p in reply.parts if not isinstance(p, float))
            self.send_header("content-length", str(len(body)))
        self.end_headers()
        try:
            if not reply.chunked:
                self.wfile.write(body)
                return
            for part in reply.parts:
                if isinstance(part, float):
                    time.sleep(part)
                    continue
                data = part.encode() if isinstance(part, str) else part
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass  # The client hung up (a deadline or stall test).

    do_GET = _serve
    do_POST = _serve


class ScriptedServer:
    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.routes = {}
        self.httpd.requests = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def route(self, method: str, path: str, reply: Reply) -> None:
        self.httpd.routes[(method, path)] = reply

    @property
    def requests(self) -> list:
        return self.httpd.requests

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def wire():
    server = ScriptedServer()
    yield server
    server.stop()


def sse(payload: object, space: bool = True) -> str:
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data:{' ' if space else ''}{text}\n\n"


def ndjson(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":")) + "\n"


def run(kind: str, url: str, params: DecodingParams | None = None, **endpoint_fields) -> tuple[str, Finish]:
    fields = {"model_id": "tgi" if kind == "tgi" else "m", **endpoint_fields}
    items = list(items_of(READER, get_adapter(kind), Endpoint(kind=kind, base_url=url, **fields), USER,
                               params or DecodingParams()))
    assert all(isinstance(i, Delta) for i in items[:-1]) and isinstance(items[-1], Finish)
    return "".join(i.text for i in items[:-1]), items[-1]


def fail(kind: str, url: str, params: DecodingParams | None = None, **endpoint_fields) -> tuple[BackendError, str]:
    fields = {"model_id": "tgi" if kind == "tgi" else "m", **endpoint_fields}
    shown: list[str] = []
    with pytest.raises(BackendError) as caught:
        for item in items_of(READER, get_adapter(kind), Endpoint(kind=kind, base_url=url, **fields), USER,
                             params or DecodingParams()):
            assert isinstance(item, Delta), "a Finish after a failure"
            shown.append(item.text)
    return caught.value, "".join(shown)


# --- recorded TGI chat streams -------------------------------------------------------------------

def recorded_chunks(name: str) -> list[dict]:
    chunks = json.loads((RECORDED / name).read_text())
    for chunk in chunks:
        for choice in chunk.get("choices", []):
            # Added by the client library that recorded the stream; TGI never sends it on text deltas.
            if choice.get("delta", {}).get("tool_calls", "absent") is None:
                del choice["delta"]["tool_calls"]
    return chunks


def test_recorded_json_schema_stream_reassembles_the_same_text(wire):
    chunks = recorded_chunks("tgi__test_json_schema_constrain__test_json_schema_stream.json")
    wire.route("POST", "/v1/chat/completions", Reply(parts=[sse(c) for c in chunks] + [sse("[DONE]")]))
    text, finish = run("tgi", wire.url)
    expected = "".join(c["choices"][0]["delta"]["content"] for c in chunks)
    assert text == expected
    assert json.loads(text)  # the schema-constrained answer is JSON
    assert finish.finish_reason == "stop"
    # No usage chunk in this recording: on TGI every chunk is one token, the end-of-sequence one included.
    assert finish.output_tokens == len(chunks) == 39
    assert finish.input_tokens is None
    assert finish.ttft_ms is not None and finish.ttft_ms > 0


@pytest.mark.parametrize("recording", ["tgi__test_completion_prompts__test_chat_hfhub_usage.json",
                                       "tgi__test_completion_prompts__test_chat_openai_usage.json"])
@pytest.mark.parametrize("kind", ["tgi", "openai"])
def test_recorded_usage_stream_gives_text_and_usage(wire, recording, kind):
    chunks = recorded_chunks(recording)
    wire.route("POST", "/v1/chat/completions", Reply(parts=[sse(c) for c in chunks] + [sse("[DONE]")]))
    text, finish = run(kind, wire.url)
    assert text == "OK!"
    assert (finish.finish_reason, finish.input_tokens, finish.output_tokens) == ("stop", 39, 3)


def test_recorded_stream_with_pauses_measures_ttft_and_tpot(wire):
    chunks = recorded_chunks("tgi__test_completion_prompts__test_chat_hfhub_usage.json")
    # 150 ms to the first token, then 50 ms per token: "OK", "!", end-of-sequence ("").
    parts = [0.15, sse(chunks[0]), 0.05, sse(chunks[1]), 0.05, sse(chunks[2]), sse(chunks[3]), sse("[DONE]")]
    wire.route("POST", "/v1/chat/completions", Reply(parts=parts))
    _, finish = run("tgi", wire.url)
    assert 140 <= finish.ttft_ms < 400
    # (t_last - t_first) / (N - 1) = 100 ms / 2
    assert 45 <= finish.tpot_ms < 150
    assert finish.total_ms >= finish.ttft_ms


# --- TGI /generate_stream framing --------------------------------------------------------------

def generate_events(space: bool) -> list[str]:
    return [
        sse({"index": 1, "token": {"id": 89554, "text": " Deep", "logprob": -0.97, "special": False},
             "generated_text": None, "details": None}, space),
        ":\n\n",  # axum keep-alive comment
        sse({"index": 2, "token": {"id": 89950, "text": " Learning", "logprob": -0.39, "special": False},
             "generated_text": None, "details": None}, space),
        sse({"index": 3, "token": {"id": 2, "text": "</s>", "logprob": -0.0003, "special": True},
             "generated_text": " Deep Learning",
             "details": {"finish_reason": "eos_token", "generated_tokens": 3, "seed": None, "input_length": 7}}, space),
    ]


@pytest.mark.parametrize("space", [True, False], ids=["data-space", "data-nospace"])
def test_generate_stream_framing(wire, space):
    wire.route("POST", "/generate_stream", Reply(parts=generate_events(space)))
    text, finish = run("tgi", wire.url, api="completion")
    assert text == " Deep Learning"  # the special end-of-sequence token is not text
    assert (finish.finish_reason, finish.input_tokens, finish.output_tokens) == ("stop", 7, 3)
    body = wire.requests[-1][2]
    assert body["inputs"] == "User: hi\n\nAssistant:"
    assert body["parameters"]["details"] is True


def test_generate_stream_strips_the_stop_string_tgi_keeps(wire):
    def token(i, text, final=None):
        return sse({"index": i, "token": {"id": i, "text": text, "logprob": -0.1, "special": False},
                    "generated_text": final, "details": None if final is None else
                    {"finish_reason": "stop_sequence", "generated_tokens": i, "seed": 3, "input_length": 4}})

    # "#" could start the stop string "##END": held back, then released when " ok" shows it was not.
    wire.route("POST", "/generate_stream", Reply(parts=[
        token(1, "Answer"), token(2, " #"), token(3, " ok"), token(4, " ##"), token(5, "END", "Answer # ok ##END"),
    ]))
    text, finish = run("tgi", wire.url, DecodingParams(stop=("##END",)), api="completion")
    assert text == "Answer # ok "
    assert finish.finish_reason == "stop"
    assert wire.requests[-1][2]["parameters"]["stop"] == ["##END"]


def test_generate_stream_without_final_event_is_incomplete(wire):
    wire.route("POST", "/generate_stream", Reply(parts=generate_events(True)[:2]))
    error, shown = fail("tgi", wire.url, api="completion")
    assert (error.code, error.retryable) == ("server", True)
    assert shown == " Deep"
    assert "incomplete" in str(error)


# --- errors with exact bodies ------------------------------------------------------------------

def test_text_plain_422_from_axum_is_a_validation_error(wire):
    body = ("Failed to deserialize the JSON body into the target type: "
            "stop: invalid type: string \"x\", expected a sequence")
    wire.route("POST", "/v1/chat/completions", Reply(status=422, content_type="text/plain; charset=utf-8",
                                                      parts=[body]))
    error, _ = fail("tgi", wire.url)
    assert (error.code, error.retryable, error.status) == ("validation", False, 422)
    assert str(error) == f"TGI rejected the request (422): {body}"


def test_401_with_empty_body_is_an_auth_error_without_the_token(wire):
    wire.route("POST", "/generate_stream", Reply(status=401, content_type="text/plain", parts=[], chunked=False))
    error, _ = fail("tgi", wire.url, api="completion", auth_token=TOKEN)
    assert (error.code, error.retryable, error.status) == ("auth", False, 401)
    assert "Unauthorized" in str(error)
    assert wire.requests[-1][3]["Authorization"] == f"Bearer {TOKEN}"


def test_a_server_echoing_the_token_never_gets_it_into_the_message(wire):
    wire.route("POST", "/v1/chat/completions", Reply(status=403, content_type="application/json",
                                                      parts=[json.dumps({"error": f"bad key {TOKEN}"})]))
    error, _ = fail("openai", wire.url, auth_token=TOKEN)
    assert error.code == "auth"
    assert TOKEN not in str(error) and TOKEN not in repr(error.args)
    assert "[redacted]" in str(error)


@pytest.mark.parametrize("kept", [5, 12, len(TOKEN) - 1])
def test_a_token_cut_in_half_by_the_length_limit_is_redacted_too(wire, kept):
    # The server's message is cut to MAX_DETAIL_CHARS right inside the echoed token.
    prefix = "x" * (MAX_DETAIL_CHARS - 1 - kept - len(" key ")) + " key "
    wire.route("POST", "/v1/chat/completions", Reply(status=403, content_type="application/json",
                                                      parts=[json.dumps({"error": prefix + TOKEN + " end"})]))
    error, _ = fail("openai", wire.url, auth_token=TOKEN)
    assert TOKEN[:kept] not in str(error), str(error)[-80:]
    assert "[redacted]…" in str(error)


def test_tgi_chat_validation_error_inside_a_200_stream(wire):
    wire.route("POST", "/v1/chat/completions", Reply(parts=[
        sse({"error": {"message": "Input validation error: `top_p` must be > 0.0 and < 1.0",
                       "http_status_code": 422}}),
        sse("[DONE]"),
    ]))
    error, _ = fail("tgi", wire.url)
    assert (error.code, error.retryable) == ("validation", False)
    assert str(error) == "TGI rejected the request (422): Input validation error: `top_p` must be > 0.0 and < 1.0"


def test_tgi_template_error_is_permanent(wire):
    wire.route("POST", "/v1/chat/completions", Reply(status=422, content_type="application/json", parts=[json.dumps(
        {"error": "Template error: Conversation roles must alternate user/assistant/user/assistant/...",
         "error_type": "template_error"})]))
    error, _ = fail("tgi", wire.url)
    assert (error.code, error.retryable) == ("template", False)
    assert "Conversation roles must alternate" in str(error)


def test_tgi_generation_error_mid_stream_is_retryable(wire):
    wire.route("POST", "/generate_stream", Reply(parts=[
        generate_events(True)[0],
        sse({"error": "Request failed during generation: Server error: CUDA out of memory",
             "error_type": "generation"}),
    ]))
    error, shown = fail("tgi", wire.url, api="completion")
    assert (error.code, error.retryable) == ("generation", True)
    assert shown == " Deep"
    assert "CUDA out of memory" in str(error)


def test_tgi_overloaded_event_is_retryable(wire):
    wire.route("POST", "/generate_stream",
               Reply(parts=[sse({"error": "Model is overloaded", "error_type": "overloaded"})]))
    error, _ = fail("tgi", wire.url, api="completion")
    assert (error.code, error.retryable, error.status) == ("overloaded", True, 429)
    assert str(error) == "TGI is overloaded (429): Model is overloaded"


@pytest.mark.parametrize("error_object", [
    {"object": "error", "message": "This model's maximum context length is 4096 tokens.", "type": "BadRequestError",
     "param": None, "code": 400},
    {"error": {"message": "This model's maximum context length is 4096 tokens.", "type": "BadRequestError",
               "param": None, "code": 400}},
], ids=["flat", "nested"])
def test_vllm_error_objects_in_a_200_stream(wire, error_object):
    wire.route("POST", "/v1/chat/completions", Reply(parts=[sse(error_object), sse("[DONE]")]))
    error, _ = fail("openai", wire.url)
    assert (error.code, error.retryable) == ("validation", False)
    assert "maximum context length is 4096" in str(error)


def test_openai_stream_without_done_is_a_failure(wire):
    chunk = {"id": "x", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}]}
    wire.route("POST", "/v1/chat/completions", Reply(parts=[sse(chunk)]))
    error, shown = fail("openai", wire.url)
    assert (error.code, error.retryable) == ("server", True)
    assert "[DONE]" in str(error) and shown == "Hello"


def test_openai_role_only_first_chunk_does_not_count_as_first_token(wire):
    def chunk(delta, reason=None):
        return sse({"id": "c", "object": "chat.completion.chunk", "model": "m",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]})
    wire.route("POST", "/v1/chat/completions", Reply(parts=[
        ": keep-alive comment\n\n",
        chunk({"role": "assistant", "content": ""}), 0.2, chunk({"content": "Hi"}), chunk({"content": " there"}),
        chunk({}, "length"),
        sse({"id": "c", "object": "chat.completion.chunk", "choices": [],
             "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}),
        sse("[DONE]"),
    ]))
    text, finish = run("openai", wire.url)
    assert text == "Hi there"
    assert (finish.finish_reason, finish.input_tokens, finish.output_tokens) == ("length", 5, 2)
    assert finish.ttft_ms >= 190


def test_openai_base_url_may_end_in_v1(wire):
    wire.route("POST", "/v1/chat/completions", Reply(parts=[
        sse({"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]}), sse("[DONE]")]))
    text, _ = run("openai", wire.url + "/v1/")
    assert text == "x"


def test_malformed_sse_line_is_a_protocol_error(wire):
    wire.route("POST", "/v1/chat/completions", Reply(parts=[
        sse({"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}),
        "data: {\"choices\": [\n\n", sse("[DONE]")]))
    error, _ = fail("openai", wire.url)
    assert (error.code, error.retryable) == ("protocol", False)
    assert "malformed line" in str(error)


# --- Ollama wire details -----------------------------------------------------------------------

def test_ollama_timing_uses_the_client_clock_and_eval_count(wire):
    def line(text, **final):
        return ndjson({"model": "m", "created_at": "2025-01-01T00:00:00.123456789Z",
                       "message": {"role": "assistant", "content": text}, "done": bool(final), **final})
    # Two tokens per line: the server's eval_count (7), not the number of lines, is N.
    wire.route("POST", "/api/chat", Reply(content_type="application/x-ndjson", parts=[
        0.1, line("Hel"), 0.03, line("lo t"), 0.03, line("here"), 0.03,
        line("", done_reason="stop", total_duration=999, load_duration=1, prompt_eval_count=12,
             prompt_eval_duration=5, eval_count=7, eval_duration=90_000_000),
    ]))
    text, finish = run("ollama", wire.url)
    assert text == "Hello there"
    assert (finish.finish_reason, finish.input_tokens, finish.output_tokens) == ("stop", 12, 7)
    assert 95 <= finish.ttft_ms < 300
    # (t_done - t_first) / (7 - 1) ~ 90 ms / 6
    assert 13 <= finish.tpot_ms < 40


def test_ollama_stream_without_done_is_a_failure(wire):
    wire.route("POST", "/api/chat", Reply(content_type="application/x-ndjson", parts=[
        ndjson({"model": "m", "message": {"role": "assistant", "content": "I"}, "done": False})]))
    error, shown = fail("ollama", wire.url)
    assert (error.code, error.retryable) == ("server", True)
    assert shown == "I"


def test_ollama_pre_stream_404_is_not_found(wire):
    wire.route("POST", "/api/chat", Reply(status=404, content_type="application/json; charset=utf-8",
                                          parts=[json.dumps({"error": "model 'nope' not found"})], chunked=False))
    error, _ = fail("ollama", wire.url)
    assert (error.code, error.retryable, error.status) == ("not_found", False, 404)
    assert str(error) == "Ollama does not know this model or route (404): model 'nope' not found"


def test_ollama_503_busy_is_overloaded(wire):
    wire.route("POST", "/api/chat", Reply(status=503, content_type="application/json", parts=[
        json.dumps({"error": "server busy, please try again.  maximum pending requests exceeded"})], chunked=False))
    error, _ = fail("ollama", wire.url)
    assert (error.code, error.retryable) == ("overloaded", True)


# --- timeouts --------------------------------------------------------------------------------

def test_a_trickling_server_cannot_outlive_the_deadline(wire):
    chunk = sse({"choices": [{"index": 0, "delta": {"content": "."}, "finish_reason": None}]})
    # A byte every 50 ms never trips the 2 s stall limit; the 0.6 s deadline must still end it.
    wire.route("POST", "/v1/chat/completions", Reply(parts=[x for _ in range(100) for x in (chunk, 0.05)]))
    started = time.perf_counter()
    error, shown = fail("openai", wire.url, stall_timeout_s=2.0, deadline_s=0.6)
    elapsed = time.perf_counter() - started
    assert (error.code, error.retryable) == ("deadline", False)
    assert shown.startswith("...")
    assert 0.55 <= elapsed < 1.5


def test_slow_headers_beyond_the_deadline(wire):
    wire.route("POST", "/api/chat", Reply(content_type="application/x-ndjson", header_delay_s=1.5, parts=[]))
    started = time.perf_counter()
    error, _ = fail("ollama", wire.url, stall_timeout_s=5.0, deadline_s=0.4)
    assert (error.code, error.retryable) == ("deadline", False)
    assert time.perf_counter() - started < 1.2


def test_silence_mid_answer_is_a_stall(wire):
    chunk = sse({"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}]})
    wire.route("POST", "/v1/chat/completions", Reply(parts=[chunk, 1.5, sse("[DONE]")]))
    started = time.perf_counter()
    error, shown = fail("openai", wire.url, stall_timeout_s=0.3, deadline_s=10)
    assert (error.code, error.retryable) == ("stall", True)
    assert "mid-answer" in str(error) and shown == "a"
    assert time.perf_counter() - started < 1.2


# --- health and discovery ----------------------------------------------------------------------

def test_health_and_discovery_for_each_kind(wire):
    wire.route("GET", "/health", Reply(content_type="text/plain", parts=[], chunked=False))
    wire.route("GET", "/info", Reply(content_type="application/json", chunked=False, parts=[json.dumps(
        {"model_id": "meta-llama/Llama-3.1-8B-Instruct", "max_input_tokens": 8191, "max_total_tokens": 8192})]))
    wire.route("GET", "/api/version", Reply(content_type="application/json", chunked=False,
                                            parts=['{"version":"0.33.0"}']))
    wire.route("GET", "/api/tags", Reply(content_type="application/json", chunked=False, parts=[json.dumps({"models": [
        {"name": "llama3.2:latest", "model": "llama3.2:latest",
         "details": {"family": "llama", "parameter_size": "3.2B"}}]})]))
    wire.route("POST", "/api/show", Reply(content_type="application/json", chunked=False, parts=[json.dumps(
        {"model_info": {"general.architecture": "llama", "llama.context_length": 131072}})]))
    wire.route("GET", "/v1/models", Reply(content_type="application/json", chunked=False, parts=[json.dumps(
        {"object": "list", "data": [{"id": "Qwen/Qwen2.5-7B", "object": "model", "max_model_len": 32768}]})]))
    for kind in ("tgi", "ollama", "openai"):
        get_adapter(kind).health(Endpoint(kind=kind, base_url=wire.url, model_id=""))
    endpoint = Endpoint(kind="tgi", base_url=wire.url, model_id="tgi")
    assert [(m.model_id, m.context_length) for m in get_adapter("tgi").discover(endpoint)] == [
        ("meta-llama/Llama-3.1-8B-Instruct", 8192)]
    found = get_adapter("ollama").discover(Endpoint(kind="ollama", base_url=wire.url, model_id=""))
    assert [(m.model_id, m.context_length, m.parameter_size, m.family) for m in found] == [
        ("llama3.2:latest", 131072, "3.2B", "llama")]
    found = get_adapter("openai").discover(Endpoint(kind="openai", base_url=wire.url, model_id=""))
    assert [(m.model_id, m.context_length) for m in found] == [("Qwen/Qwen2.5-7B", 32768)]


def test_unhealthy_tgi(wire):
    wire.route("GET", "/health", Reply(status=503, content_type="application/json", chunked=False,
                                       parts=['{"error":"unhealthy","error_type":"healthcheck"}']))
    with pytest.raises(BackendError) as caught:
        get_adapter("tgi").health(Endpoint(kind="tgi", base_url=wire.url, model_id="tgi"))
    assert caught.value.retryable and "unhealthy" in str(caught.value)
