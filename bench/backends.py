"""What our adapters cost: time to first token and tokens/s through each adapter vs a bare httpx reader.

Starts the loopback emulator in this process and, for each adapter (TGI chat, TGI completion,
Ollama, OpenAI-compatible), streams the same request body N times through the adapter and N times
through a minimal httpx loop that only parses what it needs to time the stream. Runs alternate
so both see the same conditions. Prints figures; asserts nothing about speed.

    .venv/bin/python bench/backends.py [--repetitions 30] [--ttft-ms 40] [--tokens-per-second 200]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402

from workers.backends import DecodingParams, Delta, Endpoint, Finish, Message, get_adapter  # noqa: E402
from workers.emulator import EmulatedModel, EmulatorServer  # noqa: E402

MODEL = "bench-model-7b"
CASES = [("tgi chat", "tgi", "chat"), ("tgi completion", "tgi", "completion"), ("ollama", "ollama", "chat"),
         ("openai", "openai", "chat")]
MESSAGES = [Message("user", "Explain in a few sentences why the sky is blue.")]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def through_adapter(endpoint: Endpoint, params: DecodingParams) -> tuple[float, float | None]:
    finish = None
    for item in get_adapter(endpoint.kind).stream(endpoint, MESSAGES, params):
        if isinstance(item, Finish):
            finish = item
        else:
            assert isinstance(item, Delta)
    assert finish is not None and finish.ttft_ms is not None
    rate = 1000.0 / finish.tpot_ms if finish.tpot_ms else None
    return finish.ttft_ms, rate


def bare_visible_text(kind: str, api: str, payload: dict) -> tuple[str, int | None, bool]:
    """(text, server token count if this event has it, whether this event is a token event)."""
    if kind == "ollama":
        return (payload.get("message") or {}).get("content") or "", payload.get("eval_count"), True
    if api == "completion":
        token = payload.get("token") or {}
        details = payload.get("details") or {}
        return ("" if token.get("special") else token.get("text") or ""), details.get("generated_tokens"), True
    usage = payload.get("usage") or {}
    choices = payload.get("choices") or []
    text = ((choices[0].get("delta") or {}).get("content") or "") if choices else ""
    return text, usage.get("completion_tokens"), bool(choices)


def bare_reader(client: httpx.Client, url: str, body: dict, kind: str, api: str) -> tuple[float, float | None]:
    """The least a client can do: POST, read lines, json-decode them, note the times."""
    t_first = t_last = None
    tokens = None
    t0 = time.perf_counter()
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if kind != "ollama":
                if not line.startswith("data:"):
                    continue
                line = line[5:].strip()
                if line == "[DONE]":
                    break
            if not line:
                continue
            now = time.perf_counter()
            text, count, is_token = bare_visible_text(kind, api, json.loads(line))
            if text and t_first is None:
                t_first = now
            if is_token:
                t_last = now
            if count is not None:
                tokens = count
    assert t_first is not None
    rate = (tokens - 1) / (t_last - t_first) if tokens and tokens > 1 and t_last > t_first else None
    return (t_first - t0) * 1000.0, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--repetitions", type=int, default=30)
    parser.add_argument("--ttft-ms", type=float, default=40.0, help="the emulated model's time to first token")
    parser.add_argument("--tokens-per-second", type=float, default=200.0)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    model = EmulatedModel(name=MODEL, style="terse", ttft_ms=args.ttft_ms, tokens_per_second=args.tokens_per_second,
                          max_tokens=args.max_tokens, seed=0)
    server = EmulatorServer(models=[model], host="127.0.0.1", port=0)
    server.start()
    params = DecodingParams(temperature=0.7, seed=1, max_new_tokens=args.max_tokens)
    rows = []
    try:
        with httpx.Client(timeout=httpx.Timeout(30.0)) as bare_client:
            for label, kind, api in CASES:
                base_url = server.url_for(kind, MODEL)
                endpoint = Endpoint(kind=kind, base_url=base_url, model_id="tgi" if kind == "tgi" else MODEL, api=api)
                path, body = get_adapter(kind).request_for(endpoint, MESSAGES, params)
                url = base_url.rstrip("/") + path
                adapter_ttft, bare_ttft, adapter_rate, bare_rate, paired = [], [], [], [], []
                for warmup in range(2):
                    through_adapter(endpoint, params)
                    bare_reader(bare_client, url, body, kind, api)
                for i in range(args.repetitions):
                    if i % 2:
                        bare = bare_reader(bare_client, url, body, kind, api)
                        ours = through_adapter(endpoint, params)
                    else:
                        ours = through_adapter(endpoint, params)
                        bare = bare_reader(bare_client, url, body, kind, api)
                    adapter_ttft.append(ours[0])
                    bare_ttft.append(bare[0])
                    paired.append(ours[0] - bare[0])
                    if ours[1]:
                        adapter_rate.append(ours[1])
                    if bare[1]:
                        bare_rate.append(bare[1])
                rows.append((label, adapter_ttft, bare_ttft, adapter_rate, bare_rate, paired))
    finally:
        server.stop()

    print(f"Emulated model: TTFT {args.ttft_ms:g} ms, {args.tokens_per_second:g} tokens/s, "
          f"{args.max_tokens} tokens; {args.repetitions} repetitions each, loopback.")
    header = (f"{'adapter':<16}{'ttft p50 ours':>14}{'bare':>8}{'ttft p95 ours':>15}{'bare':>8}"
              f"{'tok/s ours':>12}{'bare':>8}{'overhead ms':>13}")
    print(header)
    print("-" * len(header))
    for label, adapter_ttft, bare_ttft, adapter_rate, bare_rate, paired in rows:
        def rate(values: list[float]) -> str:
            return f"{statistics.median(values):.1f}" if values else "n/a"
        print(f"{label:<16}{percentile(adapter_ttft, 0.5):>14.2f}{percentile(bare_ttft, 0.5):>8.2f}"
              f"{percentile(adapter_ttft, 0.95):>15.2f}{percentile(bare_ttft, 0.95):>8.2f}"
              f"{rate(adapter_rate):>12}{rate(bare_rate):>8}{statistics.median(paired):>13.2f}")
    print("overhead ms: median over runs of (adapter TTFT - bare TTFT) in back-to-back pairs; "
          "tok/s: median of (N-1)/(t_last - t_first) with N from the server.")


if __name__ == "__main__":
    main()
