"""Ollama's native REST API, serving every configured model.

Routes: ``POST /api/chat``, ``POST /api/generate`` (NDJSON streams, ``stream`` defaults to true),
``GET /api/tags``, ``POST /api/show``, ``GET /api/ps``, ``POST /api/pull``, ``GET /api/version`` and
``GET /`` ("Ollama is running"). Errors are ``{"error": "..."}``; once a stream has started an error
becomes one last ``{"error": ...}`` line on the 200 response and the stream ends.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time

from .config import EmulatedModel
from .http import Connection, Request
from .runtime import (
    Pacer, State, apply_server_fault, bearer_ok, dumps_go, rfc3339, rfc3339_now, stall_without_response, strike,
    strike_index, stream_fault,
)
from .text import Generation, count_tokens, derived_seed, generate, token_id, tokenize

VERSION = "0.33.0"
JSON = [("Content-Type", "application/json; charset=utf-8")]
NDJSON = [("Content-Type", "application/x-ndjson")]
TEXT = [("Content-Type", "text/plain; charset=utf-8")]

RUNNER_ERROR = "an error was encountered while running the model"
FAULT_ERRORS = {
    # Fault kind -> (status, message). Ollama has no 422 or 429; these are its nearest real answers.
    "401": (401, "unauthorized"),
    "422": (400, "top_logprobs must be between 0 and 20"),
    "429": (503, "server busy, please try again.  maximum pending requests exceeded"),
    "500": (500, "llama runner process has terminated: exit status 2"),
}
# Option name -> expected JSON kind, for the type check Ollama applies to ``options``.
OPTION_TYPES = {
    "num_predict": "integer", "seed": "integer", "top_k": "integer", "num_ctx": "integer", "num_keep": "integer",
    "repeat_last_n": "integer", "num_batch": "integer", "num_gpu": "integer", "num_thread": "integer",
    "temperature": "float32", "top_p": "float32", "min_p": "float32", "typical_p": "float32",
    "repeat_penalty": "float32", "presence_penalty": "float32", "frequency_penalty": "float32",
    "stop": "array", "use_mmap": "boolean",
}


class OllamaError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def send_error(conn: Connection, status: int, message: str) -> None:
    await conn.respond(status, JSON, dumps_go({"error": message}), canonical=True)


def go_decode_error(exc: ValueError, raw: str) -> str:
    """Roughly what Go's encoding/json says about a malformed body."""
    position = getattr(exc, "pos", 0)
    if position >= len(raw.rstrip()):
        return "unexpected EOF"
    return f"invalid character {raw[position]!r} looking for beginning of value"


def read_json(request: Request) -> dict:
    if not request.body.strip():
        raise OllamaError(400, "missing request body")
    raw = request.body.decode("utf-8", errors="replace")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise OllamaError(400, go_decode_error(exc, raw)) from exc
    if not isinstance(data, dict):
        raise OllamaError(400, f"json: cannot unmarshal {type_name(data)} into Go value of type api.ChatRequest")
    return data


def type_name(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def find_model(state: State, name: str) -> EmulatedModel | None:
    """Ollama's name resolution: a missing tag means ``:latest``."""
    for candidate in (name, name.removesuffix(":latest"), f"{name}:latest"):
        if candidate in state.models:
            return state.models[candidate]
    return None


def resolve(state: State, data: dict, struct: str) -> tuple[EmulatedModel, str]:
    name = data.get("model", data.get("name"))
    if name is not None and not isinstance(name, str):
        raise OllamaError(400, f"json: cannot unmarshal {type_name(name)} into Go struct field "
                               f"{struct}.model of type string")
    if not name:
        raise OllamaError(400, "model is required")
    model = find_model(state, name)
    if model is None:
        raise OllamaError(404, f"model '{name}' not found")
    return model, name


def check_options(options) -> dict:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise OllamaError(400, f"json: cannot unmarshal {type_name(options)} into Go struct field "
                               f"ChatRequest.options of type map[string]interface {{}}")
    for key, value in options.items():
        kind = OPTION_TYPES.get(key)
        if kind is None or value is None:
            continue  # unknown options are logged and ignored by Ollama
        ok = {
            "integer": isinstance(value, (int, float)) and not isinstance(value, bool),
            "float32": isinstance(value, (int, float)) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
            "array": isinstance(value, list),
        }[kind]
        if not ok:
            raise OllamaError(500, f'option "{key}" must be of type {kind}')
        if kind == "array" and not all(isinstance(item, str) for item in value):
            raise OllamaError(500, f'option "{key}" must be of an array of strings')
    return options


def decoding(model: EmulatedModel, options: dict, prompt: str, prompt_tokens: int) -> dict:
    temperature = float(options.get("temperature", 0.8))
    seed = options.get("seed")
    greedy = temperature == 0.0
    if greedy:
        used_seed = None
    elif seed is None or int(seed) < 0:
        used_seed = derived_seed(model, prompt)
    else:
        used_seed = int(seed)
    context = int(options.get("num_ctx") or model.context_length)
    limit = max(1, context - prompt_tokens)
    predict = options.get("num_predict")
    if predict is not None and int(predict) > 0:
        limit = min(limit, int(predict))
    return {"seed": used_seed, "limit": limit, "stop": list(options.get("stop") or [])}


def render_chat(messages: list) -> tuple[str, str]:
    """A Llama-3-style template; returns (prompt, last user text)."""
    parts = []
    last_user = ""
    for message in messages:
        if not isinstance(message, dict):
            continue
        role, content = str(message.get("role", "")), str(message.get("content") or "")
        if role == "user":
            last_user = content
        parts.append(f"<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>")
    prompt = "<|begin_of_text|>" + "".join(parts) + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    return prompt, last_user


def metrics(model: EmulatedModel, generation: Generation, started: float, load_s: float) -> dict:
    """Ollama's integer-nanosecond metrics; zero values are left out, as Go's omitempty does.

    prompt_eval_duration is the model's configured time to first token and eval_duration is
    eval_count tokens at the configured rate, so load + prompt_eval is the TTFT and
    eval_duration / eval_count the time per output token.
    """
    eval_count = generation.visible_tokens
    values = {
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": int(load_s * 1e9),
        "prompt_eval_count": generation.prompt_tokens,
        "prompt_eval_duration": int(model.ttft_ms * 1e6),
        "eval_count": eval_count,
        "eval_duration": int(eval_count * 1e9 / model.tokens_per_second),
    }
    return {key: value for key, value in values.items() if value}


def load_delay(state: State, model: EmulatedModel) -> float:
    """Seconds of cold-start load this request pays: ``load_ms`` if the model is not loaded yet."""
    with state.lock:
        cold = model.name not in state.loaded
        state.loaded[model.name] = time.time()
    return model.load_ms / 1000.0 if cold else 0.0


def unload_if_asked(state: State, model: EmulatedModel, data: dict) -> None:
    if data.get("keep_alive") in (0, "0", "0s", "0m"):
        with state.lock:
            state.loaded.pop(model.name, None)


async def status_fault(state: State, model: EmulatedModel, conn: Connection) -> bool:
    fault = state.fault_for(model.name)
    if fault is None or fault.kind not in FAULT_ERRORS:
        return False
    status, message = FAULT_ERRORS[fault.kind]
    await send_error(conn, status, message)
    return True


async def generation_route(state: State, request: Request, conn: Connection, *, chat: bool) -> None:
    """``/api/chat`` and ``/api/generate``."""
    data = read_json(request)
    model, requested = resolve(state, data, "ChatRequest" if chat else "GenerateRequest")
    if await apply_server_fault(state, model.name, conn):
        return
    options = check_options(data.get("options"))
    if await status_fault(state, model, conn):
        return
    stream = data.get("stream", True) is not False
    if chat:
        messages = data.get("messages") or []
        if not isinstance(messages, list):
            raise OllamaError(400, "json: cannot unmarshal object into Go struct field ChatRequest.messages "
                                   "of type []api.Message")
        prompt, topic = render_chat(messages)
        empty = not messages
    else:
        text = data.get("prompt") or ""
        system = data.get("system") or ""
        prompt = text if data.get("raw") else (f"{system}\n\n{text}" if system else text)
        topic, empty = text, not text
    def stamped(fields: dict) -> dict:
        """A response object: model as requested, the current time, then ``fields`` in order."""
        return {"model": requested, "created_at": rfc3339_now(), **fields}

    if empty:
        # Only a model: load (or, with keep_alive 0, unload) it and say so.
        unloading = data.get("keep_alive") in (0, "0", "0s", "0m")
        if unloading:
            unload_if_asked(state, model, data)
        else:
            await asyncio.sleep(load_delay(state, model))
        reason = "unload" if unloading else "load"
        done = stamped({"message": {"role": "assistant", "content": ""}, "done_reason": reason, "done": True}
                       if chat else {"response": "", "done": True, "done_reason": reason})
        await conn.respond(200, JSON, dumps_go(done), canonical=True)
        return
    load_s = load_delay(state, model)
    prompt_tokens = count_tokens(prompt) + 1
    plan = decoding(model, options, prompt, prompt_tokens)
    generation = generate(model, prompt, seed=plan["seed"], limit=plan["limit"], stops=plan["stop"],
                          topic_text=topic, prompt_tokens=prompt_tokens)
    pacer = Pacer(model, start=request.received_at, extra_delay_s=load_s)
    pieces = generation.pieces(strip_stop=True)
    visible = [(index, piece) for index, piece in enumerate(pieces) if piece]

    def line(content: str) -> dict:
        return stamped({"message": {"role": "assistant", "content": content}, "done": False}
                       if chat else {"response": content, "done": False})

    def final(content: str) -> dict:
        # Field order follows Ollama's structs: chat puts done_reason before done, generate after.
        reason = "length" if generation.finish == "length" else "stop"
        if chat:
            body = stamped({"message": {"role": "assistant", "content": content}, "done_reason": reason,
                            "done": True})
        else:
            body = stamped({"response": content, "done": True, "done_reason": reason})
            if not data.get("raw"):
                body["context"] = [token_id(p) for p in tokenize(prompt)] + [
                    t.id for t in generation.tokens if not t.special]
        body.update(metrics(model, generation, request.received_at, load_s))
        return body

    fault = stream_fault(state, model.name)
    strike_at = strike_index(fault, len(visible)) if visible else None
    if not stream:
        if strike_at is not None:
            await pacer.wait(visible[strike_at][0])
            if fault.kind == "stall":
                await stall_without_response(conn, fault)
            elif fault.kind == "malformed_line":
                await conn.respond(200, JSON, b'{"model":"' + requested.encode() + b'","created_at":', canonical=True)
            else:
                await send_error(conn, 500, RUNNER_ERROR)
            return
        await pacer.wait(generation.visible_tokens)
        await conn.respond(200, JSON, dumps_go(final(generation.text_before_stop)), canonical=True)
        unload_if_asked(state, model, data)
        return

    await conn.start_stream(200, NDJSON, canonical=True)
    for position, (index, piece) in enumerate(visible):
        await pacer.wait(index)
        if position == strike_at:
            await strike(conn, fault,
                         send_error=lambda: conn.send(dumps_go({"error": RUNNER_ERROR}) + b"\n"),
                         send_malformed=lambda: conn.send(
                             b'{"model":"' + requested.encode() + b'","created_at":\n'))
            return
        await conn.send(dumps_go(line(piece)) + b"\n")
    # The done line comes one token interval after the last token, when decoding has finished.
    await pacer.wait(generation.visible_tokens)
    await conn.send(dumps_go(final("")) + b"\n")
    await conn.end()
    unload_if_asked(state, model, data)


# ---------------------------------------------------------------- model listing routes

def digest_of(model: EmulatedModel) -> str:
    return hashlib.sha256(model.name.encode()).hexdigest()


def size_of(model: EmulatedModel) -> int:
    """Bytes of a 4-bit quantised file of roughly the stated parameter count."""
    try:
        billions = float(model.parameter_size.rstrip("bB"))
    except ValueError:
        billions = 7.0
    return int(billions * 1e9 * 0.58)


def details_of(model: EmulatedModel) -> dict:
    return {"parent_model": "", "format": "gguf", "family": model.family, "families": [model.family],
            "parameter_size": model.parameter_size, "quantization_level": "Q4_K_M"}


def tags(state: State) -> dict:
    modified = rfc3339(state.started_at)
    return {"models": [{"name": m.name, "model": m.name, "modified_at": modified, "size": size_of(m),
                        "digest": digest_of(m), "details": details_of(m)} for m in state.models.values()]}


def show(state: State, model: EmulatedModel) -> dict:
    try:
        parameter_count = int(float(model.parameter_size.rstrip("bB")) * 1e9)
    except ValueError:
        parameter_count = 7_000_000_000
    return {
        "license": "Emulated model for tests and demos; no weights.",
        "modelfile": f"# Modelfile generated by \"ollama show\"\nFROM {model.name}\n"
                     f"TEMPLATE \"{{{{ .Prompt }}}}\"\nPARAMETER stop <|eot_id|>\n",
        "parameters": 'stop                           "<|eot_id|>"',
        "template": "{{ .Prompt }}",
        "details": details_of(model),
        "model_info": {"general.architecture": "llama", "general.basename": model.name,
                       "general.parameter_count": parameter_count, "llama.context_length": model.context_length},
        "capabilities": ["completion"],
        "modified_at": rfc3339(state.started_at),
    }


async def pull(state: State, request: Request, conn: Connection) -> None:
    data = read_json(request)
    name = data.get("model", data.get("name")) or ""
    if not name:
        raise OllamaError(400, "model is required")
    model = find_model(state, name)
    if data.get("stream", True) is False:
        if model is None:
            raise OllamaError(500, "pull model manifest: file does not exist")
        await conn.respond(200, JSON, dumps_go({"status": "success"}), canonical=True)
        return
    await conn.start_stream(200, NDJSON, canonical=True)
    await conn.send(dumps_go({"status": "pulling manifest"}) + b"\n")
    if model is None:
        await conn.send(dumps_go({"error": "pull model manifest: file does not exist"}) + b"\n")
    else:
        total = size_of(model)
        digest = f"sha256:{digest_of(model)}"
        for status in ({"status": f"pulling {digest_of(model)[:12]}", "digest": digest, "total": total,
                        "completed": total},
                       {"status": "verifying sha256 digest"}, {"status": "writing manifest"}, {"status": "success"}):
            await conn.send(dumps_go(status) + b"\n")
    await conn.end()


def processes(state: State) -> dict:
    with state.lock:
        loaded = dict(state.loaded)
    models = []
    for name, since in loaded.items():
        model = state.models.get(name)
        if model is None:
            continue
        models.append({"name": name, "model": name, "size": size_of(model), "digest": digest_of(model),
                       "details": details_of(model), "expires_at": rfc3339(since + 300),
                       "size_vram": size_of(model), "context_length": model.context_length})
    return {"models": models}


async def handle(state: State, sub: str, request: Request, conn: Connection) -> None:
    """Serve one request; ``sub`` is the path below the Ollama base URL."""
    method = request.method
    try:
        if sub in ("", "/") and method in ("GET", "HEAD"):
            await conn.respond(200, TEXT, b"Ollama is running", canonical=True)
        elif sub == "/api/version" and method in ("GET", "HEAD"):
            await conn.respond(200, JSON, dumps_go({"version": VERSION}), canonical=True)
        elif sub == "/api/tags" and method in ("GET", "HEAD"):
            await conn.respond(200, JSON, dumps_go(tags(state)), canonical=True)
        elif sub == "/api/ps" and method == "GET":
            await conn.respond(200, JSON, dumps_go(processes(state)), canonical=True)
        elif sub == "/api/show" and method == "POST":
            data = read_json(request)
            model, _ = resolve(state, data, "ShowRequest")
            if await apply_server_fault(state, model.name, conn):
                return
            await conn.respond(200, JSON, dumps_go(show(state, model)), canonical=True)
        elif sub == "/api/pull" and method == "POST":
            await pull(state, request, conn)
        elif sub in ("/api/chat", "/api/generate") and method == "POST":
            if not bearer_ok(request, state.api_key):
                raise OllamaError(401, "unauthorized")
            await generation_route(state, request, conn, chat=sub == "/api/chat")
        else:
            await conn.respond(404, TEXT, b"404 page not found", canonical=True)
    except OllamaError as exc:
        if not conn.headers_sent:
            await send_error(conn, exc.status, exc.message)
