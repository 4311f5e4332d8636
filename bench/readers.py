"""What reading many streams costs a worker process: one thread per stream vs one event loop.

The emulator runs in its own process (as a GPU host would). This process reads N concurrent
streams of the same TGI chat request through the adapter, paced as a worker paces them (after a
batch goes out, the reader waits most of a batch interval), in two ways, alternating runs:

* thread: one thread per stream, ``adapter.stream`` (httpx), as the worker read before;
* event loop: every stream in one loop thread, ``adapter.astream`` (``workers.backends.http1``),
  as the worker reads now.

Printed per way: the process's CPU time per stream, wall time, and how late a probe thread wakes
(it sleeps 2 ms, then does a little Python work, over and over): the probe stands for the
worker's other threads, such as the one that takes the next task from the broker, and its
lateness is how long they wait for the interpreter lock. Every stream's text is checked against
the first one's. Asserts nothing about speed.

    .venv/bin/python bench/readers.py [--streams 100] [--runs 3] [--tokens 200] [--tokens-per-second 100]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")

import django  # noqa: E402

django.setup()

from workers.backends import DecodingParams, Delta, Endpoint, Finish, Message, get_adapter  # noqa: E402
from workers.emulator import EmulatedModel  # noqa: E402

MODEL = "bench-readers-7b"
MESSAGES = [Message("user", "Explain in a few paragraphs why the sky is blue.")]
BATCH_S = 0.040
PACE_S = BATCH_S * 0.75
START_GAP_S = 0.010


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Probe:
    """A thread that sleeps 2 ms and then needs the interpreter for a moment, noting how late it is."""

    def __init__(self) -> None:
        self.late_ms: list[float] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop:
            start = time.perf_counter()
            time.sleep(0.002)
            sum(range(200))
            self.late_ms.append((time.perf_counter() - start - 0.002) * 1000.0)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop = True
        self._thread.join()


class Paced:
    """The worker's publishing rhythm without the publishing: True when a batch would go out."""

    def __init__(self) -> None:
        self.last = float("-inf")

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last >= BATCH_S:
            self.last = now
            return True
        return False


def read_in_threads(endpoint: Endpoint, params: DecodingParams, streams: int) -> list[str]:
    texts = [""] * streams

    def one(index: int) -> None:
        pieces, paced = [], Paced()
        for item in get_adapter(endpoint.kind).stream(endpoint, MESSAGES, params):
            if isinstance(item, Delta):
                pieces.append(item.text)
                if paced.due():
                    time.sleep(PACE_S)
            elif isinstance(item, Finish):
                texts[index] = "".join(pieces)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
        time.sleep(START_GAP_S)
    for thread in threads:
        thread.join()
    return texts


def read_in_loop(endpoint: Endpoint, params: DecodingParams, streams: int) -> list[str]:
    texts = [""] * streams

    async def one(index: int) -> None:
        pieces, paced = [], Paced()
        async for items in get_adapter(endpoint.kind).astream(endpoint, MESSAGES, params):
            due = False
            for item in items:
                if isinstance(item, Delta):
                    pieces.append(item.text)
                    due = paced.due() or due
                elif isinstance(item, Finish):
                    texts[index] = "".join(pieces)
            if due:
                await asyncio.sleep(PACE_S)

    async def all_of_them() -> None:
        tasks = []
        for index in range(streams):
            tasks.append(asyncio.create_task(one(index)))
            await asyncio.sleep(START_GAP_S)
        await asyncio.gather(*tasks)

    loop_thread = threading.Thread(target=lambda: asyncio.run(all_of_them()))
    loop_thread.start()
    loop_thread.join()
    return texts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3, help="runs of each way, alternating")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--tokens-per-second", type=float, default=100.0)
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    args = parser.parse_args()

    model = EmulatedModel(name=MODEL, style="terse", ttft_ms=args.ttft_ms, tokens_per_second=args.tokens_per_second,
                          max_tokens=args.tokens, seed=11)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="arena-bench-readers-") as workdir:
        config = Path(workdir) / "models.json"
        config.write_text(json.dumps([model.as_dict()]))
        emulator = subprocess.Popen([sys.executable, "manage.py", "run_emulator", "--host", "127.0.0.1", "--port",
                                     str(port), "--config", str(config)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or emulator.poll() is not None:
                        print("the emulator did not start", file=sys.stderr)
                        return 1
                    time.sleep(0.1)
            endpoint = Endpoint(kind="tgi", base_url=f"http://127.0.0.1:{port}/tgi/{MODEL}", model_id="tgi")
            params = DecodingParams(temperature=0.7, seed=1, max_new_tokens=args.tokens + 56)
            ways = {"thread per stream (httpx)": read_in_threads, "one event loop (http1)": read_in_loop}
            for way in ways.values():
                way(endpoint, params, 2)  # warm-up: code paths and pooled connections
            results: dict[str, list[tuple[float, float, list[float]]]] = {name: [] for name in ways}
            reference = None
            wrong = 0
            for _run in range(args.runs):
                for name, way in ways.items():
                    cpu, wall = time.process_time(), time.perf_counter()
                    with Probe() as probe:
                        texts = way(endpoint, params, args.streams)
                    results[name].append((time.process_time() - cpu, time.perf_counter() - wall, probe.late_ms))
                    reference = reference or texts[0]
                    wrong += sum(1 for text in texts if text != reference or not text)
        finally:
            emulator.terminate()
            emulator.wait(10)

    print(f"{args.streams} concurrent streams of {args.tokens} tokens at {args.tokens_per_second:g} tokens/s "
          f"(TTFT {args.ttft_ms:g} ms), TGI chat, started {START_GAP_S * 1000:g} ms apart, paced as a worker paces "
          f"them; emulator in its own process; {os.cpu_count()} CPUs; {args.runs} runs of each, alternating.")
    print()
    header = f"{'':<28}{'CPU ms/stream':>15}{'wall s':>8}{'probe late p50':>16}{'p90':>8}{'p99 (ms)':>10}"
    print(header)
    print("-" * len(header))
    for name, runs in results.items():
        for cpu, wall, late in runs:
            print(f"{name:<28}{cpu * 1000 / args.streams:>15.1f}{wall:>8.2f}{percentile(late, 0.5):>16.2f}"
                  f"{percentile(late, 0.9):>8.2f}{percentile(late, 0.99):>10.2f}")
    print()
    print(f"Texts differing from the first stream's: {wrong} (must be 0) {'OK' if not wrong else 'FAIL'}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
