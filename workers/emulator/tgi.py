"""Hugging Face Text Generation Inference (TGI 3.x router), one served model per base URL.

Routes: ``POST /generate``, ``POST /generate_stream``, ``POST /`` (compat), ``POST /v1/chat/completions``,
``POST /v1/completions``, ``GET /info``, ``GET /health`` (also ``GET /`` and ``/ping``), ``GET /metrics``,
``GET /v1/models``. Body-parsing failures are text/plain like axum's rejections; everything else uses
TGI's ``{"error", "error_type"}`` shape, and streaming routes report errors as events on a 200.
"""
from __future__ import annotations

import hashlib
import json
import re
import time

from .config import EmulatedModel
from .http import Connection, Request
from .runtime import (
    Pacer, State, bearer_ok, dumps, stall_without_response, strike, strike_index, stream_fault,
)
from .text import BOS_ID, BOS_TEXT, Generation, count_tokens, derived_seed, generate, token_id, tokenize

VERSION = "3.3.6"
SYSTEM_FINGERPRINT = f"{VERSION}-native"
MAX_STOP_SEQUENCES = 4
MAX_BEST_OF = 2
MAX_TOP_N_TOKENS = 5
MAX_CLIENT_BATCH_SIZE = 4
# Since v3.1.1 the total-length check counts at most this many new tokens.
MAX_NEW_TOKENS_CHECKED = 1024

JSON = [("content-type", "application/json")]
TEXT = [("content-type", "text/plain; charset=utf-8")]
FINISH_REASONS = {"eos": "eos_token", "length": "length", "stop": "stop_sequence"}
# The Messages API maps only end-of-sequence to OpenAI's "stop"; the others keep TGI's names.
CHAT_FINISH_REASONS = {"eos": "stop", "length": "length", "stop": "stop_sequence"}

GENERATION_ERROR = "Request failed during generation: Server error: CUDA out of memory. Tried to allocate 2.00 GiB"
FAULT_VALIDATION = ("`inputs` tokens + `max_new_tokens` must be <= 4096. "
                    "Given: 4000 `inputs` tokens and 512 `max_new_tokens`")


class BodyRejected(Exception):
    """An axum extractor rejection: plain text, not JSON."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class ValidationFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = f"Input validation error: {message}"


# ---------------------------------------------------------------- serde-like body checks

# Field types as the router declares them. A trailing "?" means Option<T> (null allowed).
GENERATE_PARAMETERS = {
    "best_of": "usize?", "temperature": "f32?", "repetition_penalty": "f32?", "frequency_penalty": "f32?",
    "top_k": "i32?", "top_p": "f32?", "typical_p": "f32?", "do_sample": "bool", "max_new_tokens": "u32?",
    "return_full_text": "bool?", "stop": "strings", "truncate": "usize?", "watermark": "bool",
    "details": "bool", "decoder_input_details": "bool", "seed": "u64?", "top_n_tokens": "u32?",
    "grammar": "map?", "adapter_id": "string?",
}
CHAT_FIELDS = {
    "model": "string?", "messages": "messages", "frequency_penalty": "f32?", "logit_bias": "floats?",
    "logprobs": "bool?", "top_logprobs": "u32?", "max_tokens": "u32?", "max_completion_tokens": "u32?",
    "n": "u32?", "presence_penalty": "f32?", "stream": "bool", "seed": "u64?", "temperature": "f32?",
    "top_p": "f32?", "tools": "seq?", "tool_prompt": "string?", "response_format": "map?",
    "stream_options": "map?", "stop": "strings?", "repetition_penalty": "f32?", "adapter_id": "string?",
}
COMPLETION_FIELDS = {
    "model": "string?", "prompt": "prompt", "max_tokens": "u32?", "temperature": "f32?", "top_p": "f32?",
    "seed": "u64?", "stop": "strings?", "stream": "bool", "repetition_penalty": "f32?",
    "frequency_penalty": "f32?", "suffix": "string?",
}
INT_LIMITS = {"u32": (0, 2**32 - 1), "i32": (-(2**31), 2**31 - 1), "u64": (0, 2**64 - 1), "usize": (0, 2**64 - 1)}
EXPECTED = {"bool": "a boolean", "string": "a string", "strings": "a sequence", "floats": "a sequence",
            "seq": "a sequence", "map": "a map", "messages": "a sequence", "prompt": "a string or a sequence"}


def unexpected(value) -> str:
    """How serde names a JSON value in "invalid type" errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f"string {json.dumps(value)}"
    return "sequence" if isinstance(value, list) else "map"


def position_after(raw: str, key: str) -> str:
    """``line L column C`` just past ``key``'s value, the way serde reports where it stopped."""
    match = re.search(rf'"{re.escape(key)}"\s*:\s*', raw)
    end = len(raw)
    if match:
        try:
            _, end = json.JSONDecoder().raw_decode(raw, match.end())
        except ValueError:
            end = match.end()
    line = raw.count("\n", 0, end) + 1
    column = end - (raw.rfind("\n", 0, end) + 1)
    return f"line {line} column {column}"


def type_error(spec: str, value) -> str | None:
    kind = spec.rstrip("?")
    if value is None:
        return None if spec.endswith("?") else f"invalid type: null, expected {EXPECTED.get(kind, kind)}"
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "string":
        ok = isinstance(value, str)
    elif kind == "f32":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind in INT_LIMITS:
        if isinstance(value, int) and not isinstance(value, bool):
            low, high = INT_LIMITS[kind]
            return None if low <= value <= high else f"invalid value: integer `{value}`, expected {kind}"
        ok = False
    elif kind == "strings":
        if not isinstance(value, list):
            ok = False
        else:
            bad = [item for item in value if not isinstance(item, str)]
            return f"invalid type: {unexpected(bad[0])}, expected a string" if bad else None
    elif kind == "floats":
        if not isinstance(value, list):
            ok = False
        else:
            bad = [i for i in value if not isinstance(i, (int, float)) or isinstance(i, bool)]
            return f"invalid type: {unexpected(bad[0])}, expected f32" if bad else None
    elif kind in ("seq", "messages"):
        ok = isinstance(value, list)
    elif kind == "map":
        ok = isinstance(value, dict)
    elif kind == "prompt":
        ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(i, str) for i in value))
    else:
        ok = True
    return None if ok else f"invalid type: {unexpected(value)}, expected {EXPECTED.get(kind, kind)}"


def read_body(request: Request, struct: str, fields: dict[str, str], required: tuple[str, ...],
              nested: dict[str, tuple[str, dict[str, str]]] | None = None) -> dict:
    """Parse and type-check a JSON body like axum's ``Json<T>`` extractor, or raise BodyRejected."""
    if request.media_type != "application/json" and not request.media_type.endswith("+json"):
        raise BodyRejected(415, "Expected request with `Content-Type: application/json`")
    raw = request.body.decode("utf-8", errors="replace")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        detail = getattr(exc, "msg", str(exc)).lower()
        line, column = getattr(exc, "lineno", 1), getattr(exc, "colno", 1)
        raise BodyRejected(400, f"Failed to parse the request body as JSON: {detail} at line {line} column {column}")
    prefix = "Failed to deserialize the JSON body into the target type: "
    if not isinstance(data, dict):
        raise BodyRejected(422, f"{prefix}invalid type: {unexpected(data)}, expected struct {struct} "
                                f"at line 1 column {len(raw)}")
    for key, spec in fields.items():
        if key in data:
            problem = type_error(spec, data[key])
            if problem:
                raise BodyRejected(422, f"{prefix}{key}: {problem} at {position_after(raw, key)}")
    for key, (inner_struct, inner_fields) in (nested or {}).items():
        inner = data.get(key)
        if inner is None:
            continue
        if not isinstance(inner, dict):
            raise BodyRejected(422, f"{prefix}{key}: invalid type: {unexpected(inner)}, expected struct "
                                    f"{inner_struct} at {position_after(raw, key)}")
        for inner_key, spec in inner_fields.items():
            if inner_key in inner:
                problem = type_error(spec, inner[inner_key])
                if problem:
                    raise BodyRejected(422, f"{prefix}{key}.{inner_key}: {problem} at "
                                            f"{position_after(raw, inner_key)}")
    for key in required:
        if key not in data:
            raise BodyRejected(422, f"{prefix}missing field `{key}` at line 1 column {len(raw.rstrip())}")
    if "messages" in fields and "messages" in data:
        for index, message in enumerate(data["messages"]):
            if not isinstance(message, dict):
                raise BodyRejected(422, f"{prefix}messages[{index}]: invalid type: {unexpected(message)}, "
                                        f"expected struct Message at {position_after(raw, 'messages')}")
            if not isinstance(message.get("role"), str):
                raise BodyRejected(422, f"{prefix}messages[{index}]: missing field `role` at "
                                        f"{position_after(raw, 'messages')}")
    return data


# ---------------------------------------------------------------- validation (router rules)

def is_sampling(params: dict) -> bool:
    """The shard samples when asked to, or when any sampling knob is away from its neutral value."""
    temperature, top_k, top_p, typical_p = (params.get(k) for k in ("temperature", "top_k", "top_p", "typical_p"))
    return bool(params.get("do_sample")) or (temperature is not None and temperature != 1.0) \
        or bool(top_k) or (top_p is not None and top_p < 1.0) or (typical_p is not None and typical_p < 1.0)


def validate(params: dict, inputs: str, model: EmulatedModel, *, stream: bool) -> dict:
    """TGI's checks, in the router's order. Returns what generation needs."""
    best_of = params.get("best_of") or 1
    if best_of > MAX_BEST_OF or best_of == 0:
        raise ValidationFailed(f"`best_of` must be > 0 and <= {MAX_BEST_OF}. Given: {best_of}")
    if stream and best_of != 1:
        raise ValidationFailed("`best_of` != 1 is not supported when streaming tokens")
    if stream and params.get("decoder_input_details"):
        raise ValidationFailed("`decoder_input_details` == true is not supported when streaming tokens")
    sampling = is_sampling(params)
    if best_of > 1 and not sampling:
        raise ValidationFailed("you must use sampling when `best_of` is > 1")
    temperature = params.get("temperature")
    if (1.0 if temperature is None else temperature) <= 0.0:
        raise ValidationFailed("`temperature` must be strictly positive")
    repetition_penalty = params.get("repetition_penalty")
    if (1.0 if repetition_penalty is None else repetition_penalty) <= 0.0:
        raise ValidationFailed("`repetition_penalty` must be strictly positive")
    frequency_penalty = params.get("frequency_penalty")
    if not -2.0 <= (0.0 if frequency_penalty is None else frequency_penalty) <= 2.0:
        raise ValidationFailed("`frequency_penalty` must be >= -2.0 and <= 2.0")
    top_p = params.get("top_p")
    if top_p is not None and (top_p <= 0.0 or top_p >= 1.0):
        raise ValidationFailed("`top_p` must be > 0.0 and < 1.0")
    typical_p = params.get("typical_p")
    if typical_p is not None and (typical_p <= 0.0 or typical_p >= 1.0):
        raise ValidationFailed("`typical_p` must be > 0.0 and < 1.0")
    top_k = params.get("top_k")
    if top_k is not None and top_k <= 0:
        raise ValidationFailed("`top_k` must be strictly positive")
    max_new_tokens = params.get("max_new_tokens")
    if max_new_tokens == 0:
        raise ValidationFailed("`max_new_tokens` must be strictly positive")
    stop = params.get("stop") or []
    if len(stop) > MAX_STOP_SEQUENCES:
        raise ValidationFailed(f"`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences. Given: {len(stop)}")
    seed = params.get("seed")
    if seed is not None and best_of > 1:
        raise ValidationFailed("`seed` must not be set when `best_of` > 1")
    top_n_tokens = params.get("top_n_tokens")
    if top_n_tokens is not None and top_n_tokens > MAX_TOP_N_TOKENS:
        raise ValidationFailed(f"`top_n_tokens` must be >= 0 and <= {MAX_TOP_N_TOKENS}. Given: {top_n_tokens}")
    if not inputs:
        raise ValidationFailed("`inputs` cannot be empty")
    max_input_tokens = model.context_length - 1
    truncate = params.get("truncate")
    if truncate is not None and (truncate == 0 or truncate > max_input_tokens):
        raise ValidationFailed(f"`truncate` must be strictly positive and less than {max_input_tokens}. "
                               f"Given: {truncate}")
    input_length = count_tokens(inputs) + 1  # the tokenizer adds <s>
    if truncate is not None:
        input_length = min(input_length, truncate)
    if max_new_tokens is not None and input_length + min(max_new_tokens, MAX_NEW_TOKENS_CHECKED) > model.context_length:
        raise ValidationFailed(f"`inputs` tokens + `max_new_tokens` must be <= {model.context_length}. "
                               f"Given: {input_length} `inputs` tokens and {max_new_tokens} `max_new_tokens`")
    if input_length > max_input_tokens:
        raise ValidationFailed(f"`inputs` must have less than {max_input_tokens} tokens. Given: {input_length}")
    room = model.context_length - input_length
    limit = room if max_new_tokens is None else min(max_new_tokens, room)
    if not sampling:
        seed = None  # greedy decoding uses no seed and reports none
    elif seed is None:
        seed = derived_seed(model, inputs)
    return {"sampling": sampling, "seed": seed, "limit": limit, "stop": stop, "input_length": input_length}


def run(model: EmulatedModel, inputs: str, checked: dict, *, topic_text: str | None = None) -> Generation:
    return generate(model, inputs, seed=checked["seed"], limit=checked["limit"], stops=checked["stop"],
                    topic_text=topic_text, prompt_tokens=checked["input_length"])


# ---------------------------------------------------------------- responses

def token_json(token) -> dict:
    return {"id": token.id, "text": token.text, "logprob": token.logprob, "special": token.special}


def error_body(message: str, error_type: str) -> bytes:
    return dumps({"error": message, "error_type": error_type})


def timing_headers(request: Request, generation: Generation, characters: int) -> list:
    """TGI's non-stream timing headers: seconds in x-compute-time, whole milliseconds elsewhere.

    Nothing queues here, so all the time is inference; x-time-per-token is inference time over
    generated tokens, prefill included, as TGI computes it.
    """
    total = time.perf_counter() - request.received_at
    tokens = max(1, generation.generated_tokens)
    return [
        ("x-compute-type", "gpu+optimized"), ("x-compute-time", str(round(total, 9))),
        ("x-compute-characters", str(characters)), ("x-total-time", str(int(total * 1000))),
        ("x-validation-time", "0"), ("x-queue-time", "0"),
        ("x-inference-time", str(int(total * 1000))), ("x-time-per-token", str(int(total * 1000 / tokens))),
        ("x-prompt-tokens", str(generation.prompt_tokens)), ("x-generated-tokens", str(generation.generated_tokens)),
    ]


def stream_headers(characters: int) -> list:
    return [("content-type", "text/event-stream"), ("cache-control", "no-cache"), ("x-accel-buffering", "no"),
            ("x-compute-type", "gpu+optimized"), ("x-compute-characters", str(characters))]


async def sse(conn: Connection, payload) -> None:
    data = payload if isinstance(payload, bytes) else dumps(payload)
    await conn.send(b"data: " + data + b"\n\n")


async def status_fault(state: State, model: EmulatedModel, conn: Connection, *, stream: str | None) -> bool:
    """A 401/422/429/500 fault. ``stream`` is None, "generate" or "chat". True when handled."""
    fault = state.fault_for(model.name)
    if fault is None or fault.kind not in ("401", "422", "429", "500"):
        return False
    if fault.kind == "401":
        await conn.respond(401, [])
        return True
    message, error_type, status = {
        "422": (f"Input validation error: {FAULT_VALIDATION}", "validation", 422),
        "429": ("Model is overloaded", "overloaded", 429),
        "500": ("Incomplete generation", "incomplete_generation", 500),
    }[fault.kind]
    if stream is None:
        await conn.respond(status, JSON, error_body(message, error_type))
    elif stream == "generate":
        if fault.kind == "500":
            message, error_type = GENERATION_ERROR, "generation"
        await conn.start_stream(200, stream_headers(0))
        await sse(conn, error_body(message, error_type))
        await conn.end()
    else:
        await conn.start_stream(200, stream_headers(0))
        await sse(conn, {"error": {"message": message, "http_status_code": 422}})
        await sse(conn, b"[DONE]")
        await conn.end()
    state.count(model.name, "failure")
    return True


async def non_stream_fault(state: State, model: EmulatedModel, conn: Connection, pacer: Pacer,
                           generation: Generation) -> bool:
    """Stream faults on a non-streaming request. True when handled."""
    fault = stream_fault(state, model.name)
    index = strike_index(fault, generation.generated_tokens)
    if index is None:
        return False
    await pacer.wait(index)
    if fault.kind == "stall":
        await stall_without_response(conn, fault)
    elif fault.kind == "malformed_line":
        await conn.respond(200, JSON, b'{"generated_text":"')  # cut short: not valid JSON
    else:
        await conn.respond(424, JSON, error_body(GENERATION_ERROR, "generation"))
    state.count(model.name, "failure")
    return True


async def generate_once(state: State, model: EmulatedModel, request: Request, conn: Connection,
                        data: dict, *, wrap_in_list: bool) -> None:
    """Non-streaming ``/generate`` (and ``/`` with stream false, whose reply is a one-element list)."""
    if await status_fault(state, model, conn, stream=None):
        return
    params = parameters_of(data)
    inputs = data["inputs"]
    try:
        checked = validate(params, inputs, model, stream=False)
    except ValidationFailed as exc:
        state.count(model.name, "failure")
        await conn.respond(422, JSON, error_body(exc.message, "validation"))
        return
    generation = run(model, inputs, checked)
    pacer = Pacer(model, start=request.received_at)
    if await non_stream_fault(state, model, conn, pacer, generation):
        return
    await pacer.wait(generation.generated_tokens - 1)
    full_text = params.get("return_full_text")
    if full_text is None:
        # The compat route defaults to the pipeline's choice: full text for "text-generation" models.
        full_text = wrap_in_list
    body: dict = {"generated_text": (inputs if full_text else "") + generation.text}
    if params.get("details") or params.get("decoder_input_details"):
        prefill = []
        if params.get("decoder_input_details"):
            prefill = [{"id": BOS_ID, "text": BOS_TEXT, "logprob": None}] + [
                {"id": token_id(p), "text": p, "logprob": -1.0} for p in tokenize(inputs)]
        body["details"] = {"finish_reason": FINISH_REASONS[generation.finish],
                           "generated_tokens": generation.generated_tokens, "seed": generation.seed,
                           "prefill": prefill, "tokens": [token_json(t) for t in generation.tokens]}
    state.count(model.name, "success")
    headers = JSON + timing_headers(request, generation, len(inputs))
    await conn.respond(200, headers, dumps([body] if wrap_in_list else body))


def parameters_of(data: dict) -> dict:
    """The request's parameters; a missing ``parameters`` key means TGI's sampling defaults."""
    if data.get("parameters") is None:
        return {"do_sample": True, "details": False}
    return dict(data["parameters"])


async def generate_stream(state: State, model: EmulatedModel, request: Request, conn: Connection, data: dict,
                          *, compat: bool) -> None:
    """``/generate_stream`` and ``/`` with stream true: one SSE event per token, no [DONE]."""
    if await status_fault(state, model, conn, stream="generate"):
        return
    params = parameters_of(data)
    if params.get("return_full_text") is None:
        params["return_full_text"] = compat
    inputs = data["inputs"]
    try:
        checked = validate(params, inputs, model, stream=True)
    except ValidationFailed as exc:
        state.count(model.name, "failure")
        await conn.start_stream(200, stream_headers(len(inputs)))
        await sse(conn, error_body(exc.message, "validation"))
        await conn.end()
        return
    generation = run(model, inputs, checked)
    pacer = Pacer(model, start=request.received_at)
    fault = stream_fault(state, model.name)
    strike_at = strike_index(fault, generation.generated_tokens)
    await conn.start_stream(200, stream_headers(len(inputs)))
    last = generation.generated_tokens - 1
    for index, token in enumerate(generation.tokens):
        await pacer.wait(index)
        if index == strike_at:
            state.count(model.name, "failure")

            async def send_malformed(index=index, token=token) -> None:
                await conn.send(b'data: {"index":%d,"token":{"id":%d,"text":\n\n' % (index + 1, token.id))

            await strike(conn, fault, send_error=lambda: sse(conn, error_body(GENERATION_ERROR, "generation")),
                         send_malformed=send_malformed)
            return
        event: dict = {"index": index + 1, "token": token_json(token), "generated_text": None, "details": None}
        if index == last:
            full_text = bool(params.get("return_full_text"))
            event["generated_text"] = (inputs if full_text else "") + generation.text
            if params.get("details"):
                event["details"] = {"finish_reason": FINISH_REASONS[generation.finish],
                                    "generated_tokens": generation.generated_tokens, "seed": generation.seed,
                                    "input_length": generation.prompt_tokens}
        await sse(conn, event)
    state.count(model.name, "success")
    await conn.end()


# ---------------------------------------------------------------- Messages API

def render_chat(messages: list[dict]) -> tuple[str, str]:
    """A Zephyr-style chat template; returns (prompt, last user text).

    When the last message is the assistant's, the prompt ends right after its text (trailing
    whitespace trimmed), so the model continues that message.
    """
    parts = []
    last_user = ""
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") if part.get("type") == "text" else
                              f"![]({(part.get('image_url') or {}).get('url', '')})" for part in content
                              if isinstance(part, dict))
        content = content or ""
        if message["role"] == "user":
            last_user = content
        parts.append((message["role"], content))
    if parts and parts[-1][0] == "assistant":
        head = "".join(f"<|{role}|>\n{text}</s>\n" for role, text in parts[:-1])
        return (head + f"<|assistant|>\n{parts[-1][1]}").rstrip(), last_user
    return "".join(f"<|{role}|>\n{text}</s>\n" for role, text in parts) + "<|assistant|>\n", last_user


def chat_parameters(data: dict) -> dict:
    """How the router turns a chat request into generate parameters."""
    temperature = data.get("temperature")
    greedy = temperature == 0.0
    presence = data.get("presence_penalty")
    max_tokens = data.get("max_tokens")
    if max_tokens is None:
        max_tokens = data.get("max_completion_tokens")
    return {
        "do_sample": not greedy, "temperature": None if greedy else temperature, "top_p": data.get("top_p"),
        "frequency_penalty": data.get("frequency_penalty"),
        # Issue #1796: presence_penalty is passed on as a repetition penalty of presence + 2.
        "repetition_penalty": None if presence is None else presence + 2.0,
        "max_new_tokens": max_tokens, "seed": data.get("seed"), "stop": data.get("stop") or [],
        "top_n_tokens": data.get("top_logprobs") if data.get("logprobs") else None,
        "details": True,
    }


def served_name(model: EmulatedModel, data: dict) -> str:
    """"tgi" (or no model) means the served model; any other name is a LoRA id and is echoed back."""
    requested = data.get("model")
    return model.name if requested in (None, "", "tgi") else requested


async def chat_completions(state: State, model: EmulatedModel, request: Request, conn: Connection) -> None:
    data = read_body(request, "ChatRequest", CHAT_FIELDS, ("messages",))
    stream = bool(data.get("stream"))
    if await status_fault(state, model, conn, stream="chat" if stream else None):
        return
    prompt, last_user = render_chat(data["messages"])
    params = chat_parameters(data)
    name = served_name(model, data)
    created = int(time.time())
    try:
        checked = validate(params, prompt, model, stream=stream)
    except ValidationFailed as exc:
        state.count(model.name, "failure")
        if not stream:
            await conn.respond(422, JSON, error_body(exc.message, "validation"))
            return
        await conn.start_stream(200, stream_headers(len(prompt)))
        await sse(conn, {"error": {"message": exc.message, "http_status_code": 422}})
        await sse(conn, b"[DONE]")
        await conn.end()
        return
    generation = run(model, prompt, checked, topic_text=last_user)
    pacer = Pacer(model, start=request.received_at)
    usage = {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.generated_tokens,
             "total_tokens": generation.prompt_tokens + generation.generated_tokens}
    if not stream:
        if await non_stream_fault(state, model, conn, pacer, generation):
            return
        await pacer.wait(generation.generated_tokens - 1)
        body = {"object": "chat.completion", "id": "", "created": created, "model": name,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": generation.text},
                             "logprobs": None, "finish_reason": CHAT_FINISH_REASONS[generation.finish]}],
                "usage": usage}
        state.count(model.name, "success")
        headers = JSON + timing_headers(request, generation, len(prompt))
        await conn.respond(200, headers, dumps(body))
        return

    def chunk(choices: list, chunk_usage=None) -> dict:
        return {"object": "chat.completion.chunk", "id": "", "created": created, "model": name,
                "system_fingerprint": SYSTEM_FINGERPRINT, "choices": choices, "usage": chunk_usage}

    fault = stream_fault(state, model.name)
    strike_at = strike_index(fault, generation.generated_tokens)
    await conn.start_stream(200, stream_headers(len(prompt)))
    last = generation.generated_tokens - 1
    for index, token in enumerate(generation.tokens):
        await pacer.wait(index)
        if index == strike_at:
            state.count(model.name, "failure")

            async def send_error() -> None:
                await sse(conn, {"error": {"message": GENERATION_ERROR, "http_status_code": 422}})
                await sse(conn, b"[DONE]")

            await strike(conn, fault, send_error=send_error,
                         send_malformed=lambda: conn.send(b'data: {"object":"chat.completion.chunk","id":"",\n\n'))
            return
        await sse(conn, chunk([{
            "index": 0, "delta": {"role": "assistant", "content": "" if token.special else token.text},
            "logprobs": None, "finish_reason": CHAT_FINISH_REASONS[generation.finish] if index == last else None,
        }]))
    if (data.get("stream_options") or {}).get("include_usage"):
        await sse(conn, chunk([], usage))
    await sse(conn, b"[DONE]")
    state.count(model.name, "success")
    await conn.end()


async def completions(state: State, model: EmulatedModel, request: Request, conn: Connection) -> None:
    """Legacy ``/v1/completions``: one choice per prompt (at most four)."""
    data = read_body(request, "CompletionRequest", COMPLETION_FIELDS, ("prompt",))
    if data.get("suffix") is not None:
        await conn.respond(422, JSON, error_body(
            "Suffix is not supported and can be achieved by preprocessing the prompt.", "suffix not supported"))
        return
    prompts = [data["prompt"]] if isinstance(data["prompt"], str) else list(data["prompt"])
    if len(prompts) > MAX_CLIENT_BATCH_SIZE:
        await conn.respond(422, JSON, error_body(
            f"Number of prompts ({len(prompts)}) exceeds the maximum client batch size "
            f"({MAX_CLIENT_BATCH_SIZE})", "batch size exceeded"))
        return
    stream = bool(data.get("stream"))
    if await status_fault(state, model, conn, stream="chat" if stream else None):
        return
    params = chat_parameters(data)
    params["repetition_penalty"] = data.get("repetition_penalty")
    name = served_name(model, data)
    created = int(time.time())
    try:
        checked = [validate(params, prompt, model, stream=stream) for prompt in prompts]
    except ValidationFailed as exc:
        if not stream:
            await conn.respond(422, JSON, error_body(exc.message, "validation"))
            return
        await conn.start_stream(200, stream_headers(0))
        await sse(conn, {"error": {"message": exc.message, "http_status_code": 422}})
        await sse(conn, b"[DONE]")
        await conn.end()
        return
    generations = [run(model, prompt, check) for prompt, check in zip(prompts, checked)]
    pacer = Pacer(model, start=request.received_at)
    if not stream:
        await pacer.wait(max(g.generated_tokens for g in generations) - 1)
        prompt_tokens = sum(g.prompt_tokens for g in generations)
        completion_tokens = sum(g.generated_tokens for g in generations)
        body = {"object": "text_completion", "id": "", "created": created, "model": name,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [{"index": i, "text": g.text, "logprobs": None,
                             "finish_reason": CHAT_FINISH_REASONS[g.finish]} for i, g in enumerate(generations)],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}
        await conn.respond(200, JSON + timing_headers(request, generations[0], len(prompts[0])),
                           dumps(body))
        return
    await conn.start_stream(200, stream_headers(len(prompts[0])))
    for choice, generation in enumerate(generations):
        last = generation.generated_tokens - 1
        for index, token in enumerate(generation.tokens):
            await pacer.wait(index)
            await sse(conn, {"object": "text_completion", "id": "", "created": created, "model": name,
                             "system_fingerprint": SYSTEM_FINGERPRINT, "choices": [{
                                 "index": choice, "text": "" if token.special else token.text, "logprobs": None,
                                 # Streams keep the raw reason, e.g. "eos_token", on the last chunk.
                                 "finish_reason": FINISH_REASONS[generation.finish] if index == last else ""}]})
    await sse(conn, b"[DONE]")
    await conn.end()


# ---------------------------------------------------------------- info routes

def info(model: EmulatedModel) -> dict:
    return {"model_id": model.name, "model_sha": hashlib.sha1(model.name.encode()).hexdigest(),
            "model_pipeline_tag": "text-generation", "max_concurrent_requests": 128, "max_best_of": MAX_BEST_OF,
            "max_stop_sequences": MAX_STOP_SEQUENCES, "max_input_tokens": model.context_length - 1,
            "max_total_tokens": model.context_length, "validation_workers": 2,
            "max_client_batch_size": MAX_CLIENT_BATCH_SIZE, "router": "text-generation-router",
            "version": VERSION, "sha": None, "docker_label": None}


def metrics(state: State, model: EmulatedModel) -> bytes:
    with state.lock:
        counts = dict(state.counters.get(model.name, {}))
    success, failure = counts.get("success", 0), counts.get("failure", 0)
    lines = [
        "# TYPE tgi_request_count counter", f"tgi_request_count {success + failure}",
        "# TYPE tgi_request_success counter", f"tgi_request_success {success}",
        "# TYPE tgi_request_failure counter", f'tgi_request_failure{{err="generation"}} {failure}',
        "# TYPE tgi_queue_size gauge", "tgi_queue_size 0",
        "# TYPE tgi_batch_current_size gauge", "tgi_batch_current_size 0",
        "# TYPE tgi_request_mean_time_per_token_duration summary",
        f'tgi_request_mean_time_per_token_duration{{quantile="0.5"}} {1.0 / model.tokens_per_second:.6f}',
    ]
    return ("\n".join(lines) + "\n").encode()


GENERATION_ROUTES = {"", "/", "/generate", "/generate_stream", "/v1/chat/completions", "/v1/completions"}
KNOWN_ROUTES = GENERATION_ROUTES | {"/info", "/health", "/ping", "/metrics", "/v1/models"}


async def handle(state: State, model: EmulatedModel, sub: str, request: Request, conn: Connection) -> None:
    """Serve one request for the TGI instance of ``model``; ``sub`` is the path below its base URL."""
    method = request.method
    sub = "" if sub == "/" else sub
    if sub == "" and method in ("GET", "HEAD") or sub in ("/health", "/ping") and method in ("GET", "HEAD"):
        await conn.respond(200, [])
        return
    if sub not in KNOWN_ROUTES:
        await conn.respond(404, [])
        return
    is_generation = sub in GENERATION_ROUTES
    if (method != "POST") if is_generation else (method not in ("GET", "HEAD")):
        await conn.respond(405, [])
        return
    if is_generation and not bearer_ok(request, state.api_key, ignore_case=True):
        await conn.respond(401, [])
        return
    if sub == "/info":
        await conn.respond(200, JSON, dumps(info(model)))
    elif sub == "/metrics":
        await conn.respond(200, TEXT, metrics(state, model))
    elif sub == "/v1/models":
        await conn.respond(200, JSON, dumps({"object": "list", "data": [
            {"id": model.name, "object": "model", "created": 0, "owned_by": model.name}]}))
    else:
        try:
            if sub == "/v1/chat/completions":
                await chat_completions(state, model, request, conn)
            elif sub == "/v1/completions":
                await completions(state, model, request, conn)
            else:
                data = read_body(request, "GenerateRequest", {"inputs": "string", "parameters": "map?",
                                                              "stream": "bool"}, ("inputs",),
                                 nested={"parameters": ("GenerateParameters", GENERATE_PARAMETERS)})
                if sub == "/generate_stream" or (sub == "" and data.get("stream")):
                    await generate_stream(state, model, request, conn, data, compat=sub == "")
                else:
                    await generate_once(state, model, request, conn, data, wrap_in_list=sub == "")
        except BodyRejected as exc:
            if not conn.headers_sent:
                await conn.respond(exc.status, TEXT, exc.text.encode())
