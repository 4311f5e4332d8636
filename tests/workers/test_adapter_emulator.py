"""Every adapter against the loopback emulator: answers, timing, parameter mapping, and every fault.

The module runs its own emulator (not the session one) so it can set faults and read the request
log without disturbing other tests.
"""
from __future__ import annotations

import socket
import time

import pytest

from tests.fixtures.readers import READERS, items_of
from workers.backends import BackendError, DecodingParams, Delta, Endpoint, Finish, Message, get_adapter

NORMAL = "adapter-terse-7b"
FAULTY = "adapter-faulty-7b"
TTFT_MS = 30.0
TOKENS_PER_SECOND = 250.0
MAX_TOKENS = 24
TOKEN = "emulator-secret-token-42"
USER = [Message("user", "Tell me about tea.")]


# Every stream below is read by both readers (see tests.fixtures.readers).
READER = "thread"


@pytest.fixture(autouse=True, params=READERS)
def _reader(request):
    global READER
    READER = request.param
    yield
    READER = "thread"
CASES = [("tgi", "chat"), ("tgi", "completion"), ("ollama", "chat"), ("openai", "chat")]
CASE_IDS = ["tgi-chat", "tgi-completion", "ollama", "openai"]


@pytest.fixture(scope="module")
def emu():
    from workers.emulator import EmulatedModel, EmulatorServer

    models = [EmulatedModel(name=name, style="terse", ttft_ms=TTFT_MS, tokens_per_second=TOKENS_PER_SECOND,
                            max_tokens=MAX_TOKENS, seed=0, context_length=4096, parameter_size="7B", family="demo")
              for name in (NORMAL, FAULTY)]
    server = EmulatorServer(models=models, host="127.0.0.1", port=0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def faulty(emu):
    yield emu
    emu.set_fault(FAULTY, None)


def endpoint(emu, kind: str, api: str = "chat", model: str = NORMAL, **fields) -> Endpoint:
    return Endpoint(kind=kind, base_url=emu.url_for(kind, model), model_id="tgi" if kind == "tgi" else model,
                    api=api, **fields)


def run(ep: Endpoint, params: DecodingParams | None = None) -> tuple[str, Finish]:
    items = list(items_of(READER, get_adapter(ep.kind), ep, USER, params or DecodingParams(seed=1)))
    assert items and isinstance(items[-1], Finish)
    assert all(isinstance(i, Delta) for i in items[:-1])
    return "".join(i.text for i in items[:-1]), items[-1]


def fail(ep: Endpoint, params: DecodingParams | None = None) -> tuple[BackendError, str]:
    shown = []
    with pytest.raises(BackendError) as caught:
        for item in items_of(READER, get_adapter(ep.kind), ep, USER, params or DecodingParams(seed=1)):
            assert isinstance(item, Delta), "a Finish after a failure"
            shown.append(item.text)
    return caught.value, "".join(shown)


def last_body(emu, path_end: str) -> dict:
    for method, path, body in reversed(emu.request_log):
        if method == "POST" and path.endswith(path_end):
            return body
    raise AssertionError(f"no POST to *{path_end} in the emulator's log")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- answers and timing ----------------------------------------------------------------------

@pytest.mark.parametrize("kind, api", CASES, ids=CASE_IDS)
def test_answer_finish_reason_tokens_and_timing(emu, kind, api):
    text, finish = run(endpoint(emu, kind, api), DecodingParams(seed=1, max_new_tokens=12))
    assert text.strip()
    assert finish.finish_reason in ("stop", "length")
    assert finish.output_tokens is not None and 1 <= finish.output_tokens <= 13  # TGI counts a final EOS token
    if finish.finish_reason == "length":
        assert finish.output_tokens >= 12
    # The emulated model waits TTFT_MS before its first token and then streams at TOKENS_PER_SECOND.
    assert TTFT_MS * 0.8 <= finish.ttft_ms < TTFT_MS + 500
    if finish.output_tokens > 1:
        assert 1000 / TOKENS_PER_SECOND * 0.5 <= finish.tpot_ms < 1000 / TOKENS_PER_SECOND * 5
    assert finish.total_ms >= finish.ttft_ms


@pytest.mark.parametrize("kind, api", CASES, ids=CASE_IDS)
def test_long_answers_end_on_length(emu, kind, api):
    _, finish = run(endpoint(emu, kind, api), DecodingParams(seed=1, max_new_tokens=3))
    assert finish.finish_reason == "length"
    assert finish.output_tokens == 3


@pytest.mark.parametrize("kind, api", CASES, ids=CASE_IDS)
def test_greedy_is_repeatable(emu, kind, api):
    params = DecodingParams(greedy=True, max_new_tokens=10)
    assert run(endpoint(emu, kind, api), params)[0] == run(endpoint(emu, kind, api), params)[0]


# --- parameter mapping, as the server received it --------------------------------------------

def test_tgi_chat_mapping_in_the_request_log(emu):
    run(endpoint(emu, "tgi"), DecodingParams(temperature=0.5, top_p=1.0, top_k=10, repetition_penalty=1.2, seed=4))
    body = last_body(emu, "/v1/chat/completions")
    assert body["temperature"] == 0.5 and body["seed"] == 4
    assert "top_p" not in body and "presence_penalty" not in body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    run(endpoint(emu, "tgi"), DecodingParams(greedy=True, top_p=0.9))
    body = last_body(emu, "/v1/chat/completions")
    assert body["temperature"] == 0 and "top_p" not in body and "presence_penalty" not in body


def test_tgi_generate_mapping_in_the_request_log(emu):
    run(endpoint(emu, "tgi", "completion"), DecodingParams(temperature=0.9, top_p=1.0, top_k=5, seed=2))
    parameters = last_body(emu, "/generate_stream")["parameters"]
    assert parameters["do_sample"] is True and parameters["temperature"] == 0.9 and parameters["top_k"] == 5
    assert "top_p" not in parameters
    run(endpoint(emu, "tgi", "completion"), DecodingParams(greedy=True, temperature=0.9, top_p=0.5, top_k=5))
    parameters = last_body(emu, "/generate_stream")["parameters"]
    assert parameters["do_sample"] is False
    assert not {"temperature", "top_p", "top_k"} & set(parameters)
    run(endpoint(emu, "tgi", "completion"), DecodingParams(temperature=0.0))
    assert "temperature" not in last_body(emu, "/generate_stream")["parameters"]


def test_ollama_and_openai_mapping_in_the_request_log(emu):
    run(endpoint(emu, "ollama"), DecodingParams(greedy=True, max_new_tokens=7))
    options = last_body(emu, "/api/chat")["options"]
    assert options["temperature"] == 0 and options["seed"] == 0 and options["num_predict"] == 7
    run(endpoint(emu, "ollama"), DecodingParams(temperature=0.6, top_k=20, top_p=0.8, repetition_penalty=1.1, seed=9))
    options = last_body(emu, "/api/chat")["options"]
    assert (options["temperature"], options["top_k"], options["top_p"], options["repeat_penalty"],
            options["seed"]) == (0.6, 20, 0.8, 1.1, 9)
    run(endpoint(emu, "openai"), DecodingParams(top_p=1.0))
    body = last_body(emu, "/chat/completions")
    assert "top_p" not in body and "presence_penalty" not in body and body["model"] == NORMAL


@pytest.mark.parametrize("kind, api", CASES, ids=CASE_IDS)
def test_stop_string_is_not_in_the_output(emu, kind, api):
    full, _ = run(endpoint(emu, kind, api), DecodingParams(greedy=True, max_new_tokens=20))
    words = full.split()
    assert len(words) >= 4, full
    stop = words[2]
    text, finish = run(endpoint(emu, kind, api), DecodingParams(greedy=True, max_new_tokens=20, stop=(stop,)))
    assert finish.finish_reason == "stop"
    assert text == full[: full.index(stop)]
    assert stop not in text


# --- faults ----------------------------------------------------------------------------------

# fault kind -> (code, retryable)
FAULTS = {
    "refuse": ("refused", True),
    "401": ("auth", False),
    "422": ("validation", False),
    "429": ("overloaded", True),
    "500": ("server", True),
    "error_mid_stream": ("generation", True),
    "stall": ("stall", True),
    "malformed_line": ("protocol", False),
    "slow_headers": ("deadline", False),
}
# TGI's streaming routes answer 200 and send errors as events: a "500" there is a failed generation.
FAULT_CODE_OVERRIDES = {("tgi", "500"): ("generation", True)}
# The status each server really uses for these faults (Ollama and vLLM send 400 for invalid requests,
# Ollama 503 when busy); TGI's stream events carry no status, so the adapter names the one TGI means.
FAULT_STATUS = {
    "tgi": {"401": 401, "422": 422, "429": 429, "500": None},
    "ollama": {"401": 401, "422": 400, "429": 503, "500": 500},
    "openai": {"401": 401, "422": 400, "429": 429, "500": 500},
}
MESSAGE_START = {"tgi": "TGI", "ollama": "Ollama", "openai": "The OpenAI-compatible server"}


@pytest.mark.parametrize("fault_kind", list(FAULTS))
@pytest.mark.parametrize("kind, api", CASES, ids=CASE_IDS)
def test_every_fault_maps_to_its_error(faulty, kind, api, fault_kind):
    from workers.emulator import Fault

    delay_ms = 1500 if fault_kind in ("stall", "slow_headers") else 0
    faulty.set_fault(FAULTY, Fault(kind=fault_kind, after_tokens=3, delay_ms=delay_ms))
    ep = endpoint(faulty, kind, api, model=FAULTY, auth_token=TOKEN,
                  stall_timeout_s=0.4 if fault_kind == "stall" else 5,
                  deadline_s=0.5 if fault_kind == "slow_headers" else 30)
    started = time.perf_counter()
    error, shown = fail(ep)
    elapsed = time.perf_counter() - started
    expected = FAULT_CODE_OVERRIDES.get((kind, fault_kind), FAULTS[fault_kind])
    assert (error.code, error.retryable) == expected, str(error)
    message = str(error)
    assert TOKEN not in message
    assert "\n" not in message
    assert message.startswith(MESSAGE_START[kind]), message
    if fault_kind in FAULT_STATUS[kind]:
        status = FAULT_STATUS[kind][fault_kind]
        assert error.status == status
        if status:
            assert f"({status})" in message
    if fault_kind in ("error_mid_stream", "stall", "malformed_line"):
        assert shown, "the tokens before the failure reach the caller"
    else:
        assert shown == ""
    if fault_kind == "stall":
        assert "stalled mid-answer" in message
        assert elapsed < 1.2
    if fault_kind == "slow_headers":
        assert message.endswith("did not finish within the 0.5 s deadline.")
        assert elapsed < 1.2
    if fault_kind == "refuse":
        assert "closed the connection before answering" in message


@pytest.mark.parametrize("kind, api", CASES, ids=CASE_IDS)
def test_nothing_listening_is_refused_and_retryable(kind, api):
    ep = Endpoint(kind=kind, base_url=f"http://127.0.0.1:{free_port()}", model_id="tgi" if kind == "tgi" else "m",
                  api=api)
    error, _ = fail(ep)
    assert (error.code, error.retryable) == ("refused", True)
    assert "Could not connect" in str(error) and "refused" in str(error).lower()


@pytest.mark.parametrize("kind", ["tgi", "ollama", "openai"])
def test_unknown_model_is_not_found(emu, kind):
    base_url = emu.url_for(kind, NORMAL)
    if kind == "tgi":
        # TGI serves one model per base URL; a URL for a model that is not there answers 404.
        ep = Endpoint(kind=kind, base_url=base_url.rsplit("/", 1)[0] + "/no-such-model-1b", model_id="tgi")
    else:
        ep = Endpoint(kind=kind, base_url=base_url, model_id="no-such-model-1b")
    error, _ = fail(ep)
    assert (error.code, error.retryable, error.status) == ("not_found", False, 404)
    assert "(404)" in str(error)
    if kind != "tgi":
        assert "no-such-model-1b" in str(error)


# --- health and discovery ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["tgi", "ollama", "openai"])
def test_health_and_discovery(emu, kind):
    ep = endpoint(emu, kind)
    get_adapter(kind).health(ep)
    found = {m.model_id: m for m in get_adapter(kind).discover(ep)}
    if kind == "tgi":
        assert len(found) == 1
        (model,) = found.values()
        assert NORMAL in model.model_id
        assert model.context_length == 4096
    else:
        assert {NORMAL, FAULTY} <= {name.split(":")[0] for name in found}


def test_ollama_discovery_has_details(emu):
    found = {m.model_id.split(":")[0]: m for m in get_adapter("ollama").discover(endpoint(emu, "ollama"))}
    assert (found[NORMAL].context_length, found[NORMAL].parameter_size, found[NORMAL].family) == (4096, "7B", "demo")


@pytest.mark.parametrize("kind", ["tgi", "ollama", "openai"])
def test_health_of_nothing_listening(kind):
    with pytest.raises(BackendError) as caught:
        get_adapter(kind).health(Endpoint(kind=kind, base_url=f"http://127.0.0.1:{free_port()}", model_id=""))
    assert (caught.value.code, caught.value.retryable) == ("refused", True)


@pytest.mark.parametrize("kind, api", CASES, ids=CASE_IDS)
def test_many_worker_threads_share_the_pooled_client(emu, kind, api):
    from concurrent.futures import ThreadPoolExecutor

    params = DecodingParams(greedy=True, max_new_tokens=10)
    expected = run(endpoint(emu, kind, api), params)[0]
    with ThreadPoolExecutor(max_workers=24) as pool:
        texts = list(pool.map(lambda _: run(endpoint(emu, kind, api), params)[0], range(48)))
    assert texts == [expected] * 48
