"""An OpenAI-compatible server in the manner of vLLM, serving every configured model.

Routes: ``POST /v1/chat/completions`` (JSON or SSE ending in ``data: [DONE]``), ``GET /v1/models``,
``GET /health``, ``GET /version``. The ``model`` field must name a served model. With an api key,
every ``/v1`` route needs the bearer token, as vLLM's middleware requires.
"""
from __future__ import annotations

import json
import time
import uuid

from .config import EmulatedModel
from .http import Connection, Request
from .runtime import (
    Pacer, State, apply_server_fault, bearer_ok, dumps, stall_without_response, strike, strike_index,
    stream_fault,
)
from .text import count_tokens, derived_seed, generate

VERSION = "0.11.0"
JSON = [("content-type", "application/json")]
SSE = [("content-type", "text/event-stream; charset=utf-8")]
ENGINE_ERROR = "EngineCore encountered an issue. See stack trace (above) for the root cause."


class APIError(Exception):
    def __init__(self, status: int, message: str, error_type: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.param = param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param,
                          "code": self.status}}


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, "BadRequestError", param)


FAULT_ERRORS = {
    "422": lambda model: bad_request(
        f"This model's maximum context length is {model.context_length} tokens. However, you requested "
        f"{model.context_length + 512} tokens ({model.context_length} in the messages, 512 in the completion). "
        "Please reduce the length of the messages or completion.", "input_tokens"),
    "429": lambda model: APIError(429, "The server is overloaded; too many requests are waiting. "
                                       "Please retry later.", "RateLimitError"),
    "500": lambda model: APIError(500, ENGINE_ERROR, "InternalServerError"),
}


def read_request(request: Request) -> dict:
    try:
        data = json.loads(request.body.decode("utf-8"))
    except ValueError as exc:
        raise bad_request(f"JSON decode error: {getattr(exc, 'msg', exc)}") from exc
    if not isinstance(data, dict):
        raise bad_request("Input should be a valid dictionary or object to extract fields from")
    messages = data.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise bad_request("1 validation error for ChatCompletionRequest\nmessages\n  Field required"
                          if messages is None else "messages: Input should be a valid list of messages",
                          "messages")
    return data


def number(data: dict, key: str, default=None):
    value = data.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise bad_request(f"{key}: Input should be a valid number", key)
    return value


def sampling(model: EmulatedModel, data: dict, prompt: str, prompt_tokens: int) -> dict:
    """vLLM's SamplingParams checks, with its messages."""
    temperature = number(data, "temperature", 1.0)
    top_p = number(data, "top_p", 1.0)
    top_k = number(data, "top_k")
    max_tokens = number(data, "max_tokens")
    if data.get("max_completion_tokens") is not None:  # the newer name wins
        max_tokens = number(data, "max_completion_tokens")
    if temperature is not None and temperature < 0:
        raise bad_request(f"temperature must be non-negative, got {float(temperature)}.", "temperature")
    if top_p is not None and not 0 < top_p <= 1:
        raise bad_request(f"top_p must be in (0, 1], got {float(top_p)}.", "top_p")
    if top_k is not None and top_k not in (0, -1) and top_k < 1:
        raise bad_request(f"top_k must be 0 (disable), or at least 1, got {top_k}.", "top_k")
    for key in ("presence_penalty", "frequency_penalty"):
        value = number(data, key)
        if value is not None and not -2 <= value <= 2:
            raise bad_request(f"{key} must be in [-2, 2], got {float(value)}.", key)
    repetition = number(data, "repetition_penalty")
    if repetition is not None and repetition <= 0:
        raise bad_request(f"repetition_penalty must be greater than zero, got {float(repetition)}.",
                          "repetition_penalty")
    if max_tokens is not None and max_tokens < 1:
        raise bad_request(f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens")
    room = model.context_length - prompt_tokens
    if max_tokens is not None and max_tokens > room:
        raise bad_request(
            f"This model's maximum context length is {model.context_length} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
            "completion). Please reduce the length of the messages or completion.", "input_tokens")
    stop = data.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    elif stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise bad_request("stop: Input should be a valid string or list of strings", "stop")
    greedy = temperature == 0
    seed = data.get("seed")
    used_seed = None if greedy else (int(seed) if isinstance(seed, int) else derived_seed(model, prompt))
    return {"seed": used_seed, "limit": room if max_tokens is None else max_tokens, "stop": stop or [],
            "keep_stop": bool(data.get("include_stop_str_in_output"))}


def render_chat(messages: list[dict]) -> tuple[str, str]:
    """A ChatML-style template; returns (prompt, last user text)."""
    parts = []
    last_user = ""
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        content = content or ""
        if message.get("role") == "user":
            last_user = content
        parts.append(f"<|im_start|>{message.get('role', '')}\n{content}<|im_end|>\n")
    return "".join(parts) + "<|im_start|>assistant\n", last_user


async def chat_completions(state: State, request: Request, conn: Connection) -> None:
    data = read_request(request)
    name = data.get("model")
    if name is None:
        model = next(iter(state.models.values()))  # vLLM falls back to its first served model
        name = model.name
    elif name not in state.models:
        raise APIError(404, f"The model `{name}` does not exist.", "NotFoundError", "model")
    else:
        model = state.models[name]
    if await apply_server_fault(state, model.name, conn):
        return
    fault = state.fault_for(model.name)
    if fault is not None and fault.kind == "401":
        await conn.respond(401, JSON, dumps({"error": "Unauthorized"}))
        return
    if fault is not None and fault.kind in FAULT_ERRORS:
        raise FAULT_ERRORS[fault.kind](model)
    prompt, last_user = render_chat(data["messages"])
    prompt_tokens = count_tokens(prompt)
    params = sampling(model, data, prompt, prompt_tokens)
    generation = generate(model, prompt, seed=params["seed"], limit=params["limit"], stops=params["stop"],
                          topic_text=last_user, prompt_tokens=prompt_tokens)
    strip_stop = not params["keep_stop"]
    text = generation.text_before_stop if strip_stop else generation.text
    pieces = generation.pieces(strip_stop=strip_stop)
    finish = "length" if generation.finish == "length" else "stop"
    stop_reason = generation.stop_sequence
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + generation.generated_tokens,
             "completion_tokens": generation.generated_tokens}
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    pacer = Pacer(model, start=request.received_at)
    stream_problem = stream_fault(state, model.name)
    strike_at = strike_index(stream_problem, generation.generated_tokens)

    if not data.get("stream"):
        if strike_at is not None:
            await pacer.wait(strike_at)
            if stream_problem.kind == "stall":
                await stall_without_response(conn, stream_problem)
            elif stream_problem.kind == "malformed_line":
                await conn.respond(200, JSON, b'{"id":"' + completion_id.encode() + b'","object":')
            else:
                raise APIError(500, ENGINE_ERROR, "InternalServerError")
            return
        await pacer.wait(generation.generated_tokens - 1)
        body = {"id": completion_id, "object": "chat.completion", "created": created, "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                                     "tool_calls": [], "reasoning_content": None},
                             "logprobs": None, "finish_reason": finish, "stop_reason": stop_reason}],
                "usage": {**usage, "prompt_tokens_details": None}, "prompt_logprobs": None}
        await conn.respond(200, JSON, dumps(body))
        return

    def chunk(choices: list, chunk_usage=None) -> bytes:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": name,
                "choices": choices}
        if chunk_usage is not None:
            body["usage"] = chunk_usage
        return b"data: " + dumps(body) + b"\n\n"

    await conn.start_stream(200, SSE)
    last = generation.generated_tokens - 1
    for index, piece in enumerate(pieces):
        await pacer.wait(index)
        if index == strike_at:
            async def send_error() -> None:
                await conn.send(b"data: " + dumps(APIError(500, ENGINE_ERROR, "InternalServerError").body())
                                + b"\n\n")
                await conn.send(b"data: [DONE]\n\n")

            await strike(conn, stream_problem, send_error=send_error,
                         send_malformed=lambda: conn.send(b'data: {"id":"' + completion_id.encode() + b'",\n\n'))
            return
        if index == 0:
            # The role arrives on its own chunk, together with the first token.
            await conn.send(chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                    "finish_reason": None}]))
        choice = {"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}
        if index == last:
            choice.update(finish_reason=finish, stop_reason=stop_reason)
        await conn.send(chunk([choice]))
    if (data.get("stream_options") or {}).get("include_usage"):
        await conn.send(chunk([], usage))
    await conn.send(b"data: [DONE]\n\n")
    await conn.end()


def models_list(state: State) -> dict:
    created = int(state.started_at)
    return {"object": "list", "data": [
        {"id": m.name, "object": "model", "created": created, "owned_by": "vllm", "root": m.name, "parent": None,
         "max_model_len": m.context_length,
         "permission": [{"id": f"modelperm-{uuid.uuid5(uuid.NAMESPACE_DNS, m.name).hex}",
                         "object": "model_permission", "created": created, "allow_create_engine": False,
                         "allow_sampling": True, "allow_logprobs": True, "allow_search_indices": False,
                         "allow_view": True, "allow_fine_tuning": False, "organization": "*", "group": None,
                         "is_blocking": False}]}
        for m in state.models.values()]}


async def handle(state: State, sub: str, request: Request, conn: Connection) -> None:
    """Serve one request; ``sub`` is the path below the OpenAI-compatible base URL."""
    method = request.method
    try:
        if sub.startswith("/v1") and not bearer_ok(request, state.api_key):
            await conn.respond(401, JSON, dumps({"error": "Unauthorized"}))
        elif sub == "/health" and method in ("GET", "HEAD"):
            await conn.respond(200, [])
        elif sub == "/version" and method == "GET":
            await conn.respond(200, JSON, dumps({"version": VERSION}))
        elif sub == "/v1/models" and method == "GET":
            await conn.respond(200, JSON, dumps(models_list(state)))
        elif sub == "/v1/chat/completions" and method == "POST":
            await chat_completions(state, request, conn)
        elif sub in ("/health", "/version", "/v1/models", "/v1/chat/completions"):
            await conn.respond(405, JSON, dumps({"detail": "Method Not Allowed"}))
        else:
            await conn.respond(404, JSON, dumps({"detail": "Not Found"}))
    except APIError as exc:
        if not conn.headers_sent:
            await conn.respond(exc.status, JSON, dumps(exc.body()))
