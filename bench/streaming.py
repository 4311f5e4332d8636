"""What the arena adds to a stream: N concurrent battles through the production topology, on loopback.

Starts throwaway PostgreSQL and Redis (the test runner's classes), migrates, then real processes:
the backend emulator, uvicorn serving arena.asgi:application and a Celery worker on the thread
pool. N raters (group "rater", each with a logged-in session) open real WebSockets with their
session cookie and Origin header and send one prompt each; every delta is timed on arrival, per
side. Baseline in the same run: a direct httpx client reads 2*N streams of the same model, prompt
and decoding parameters from the emulator on the same schedule.

Prints time to first token added by the arena (arena TTFT minus direct TTFT, p50 and p99), the
tokens/s delivered, where the added time goes (from the rows' own timestamps), and deltas lost or
reordered (each side's seq must be 1..n without gaps, and its concatenated text must equal the
Generation.text stored). Each rater votes as soon as its battle is ready; the stored votes are
checked. Like the battle page, a client whose connection the server closes reopens it and resumes
the battle; such drops are counted, and the state frame's text then replaces what it had. Also
printed: CPU used by each process during the round, and what the worker's and web process's logs
say about messages the channel layer refused and consumers that died.

Exits non-zero if anything was lost, reordered, mismatched or failed; the speed goal is printed,
not enforced.

    .venv/bin/python bench/streaming.py [--battles 50] [--tokens 200] [--tokens-per-second 100]
                                        [--ttft-ms 50] [--ramp-s 1.0] [--concurrency 128] [--workers 1]
                                        [--db-conn-max-age SECONDS]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _topology import Stack, StackError, exit_status, make_raters, percentile, say, session_cookie_for  # noqa: E402

MODEL = "bench-stream-7b"
PROMPT = "Explain in a few paragraphs why the sky is blue, and why sunsets are red."
GOAL_P50_MS = 15.0
GOAL_P99_MS = 50.0
WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")
READY_GRACE_S = 2.0


@dataclass
class Stream:
    """One side's stream as a client saw it: when it asked, and when each piece arrived.

    After a reconnection the client resumes: the state frame's text replaces what it had
    (``base_text`` at ``base_seq``) and only deltas after ``base_seq`` may follow.
    """

    sent_at: float = 0.0                      # time.time() when the prompt / request left the client
    arrivals: list[float] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)        # seqs since the last snapshot
    pieces: list[str] = field(default_factory=list)      # texts since the last snapshot
    base_text: str = ""
    base_seq: int = 0
    gaps: int = 0                             # missing seqs, summed over every segment
    reordered: int = 0                        # a seq not above the one before it
    tokens: int | None = None                 # server's count (direct: usage; arena: Generation row)
    done: bool = False
    error: str = ""

    @property
    def ttft_ms(self) -> float | None:
        return (self.arrivals[0] - self.sent_at) * 1000.0 if self.arrivals else None

    @property
    def text(self) -> str:
        return self.base_text + "".join(self.pieces)

    def delta(self, arrived: float, seq: int, text: str) -> None:
        last = self.seqs[-1] if self.seqs else self.base_seq
        if seq <= last:
            self.reordered += 1
        elif seq > last + 1:
            self.gaps += seq - last - 1
        self.arrivals.append(arrived)
        self.seqs.append(seq)
        self.pieces.append(text)

    def snapshot(self, text: str, seq: int | None, status: str) -> None:
        """A resumed connection's state: the text so far (at ``seq``), or the final text (seq None)."""
        self.base_text, self.base_seq = text, seq or 0
        self.seqs, self.pieces = [], []
        if status == "done":
            self.done = True

    def rate(self) -> float | None:
        """Decode rate as delivered: (tokens - 1) / (last arrival - first arrival)."""
        if not self.tokens or self.tokens < 2 or len(self.arrivals) < 2:
            return None
        span = self.arrivals[-1] - self.arrivals[0]
        return (self.tokens - 1) / span if span > 0 else None


@dataclass
class BattleRun:
    index: int
    cookie: str
    sides: dict[str, Stream] = field(default_factory=lambda: {"a": Stream(), "b": Stream()})
    battle_id: str = ""
    ready: bool = False
    winner: str = ""
    revealed: bool = False
    drops: int = 0                            # connections the server closed; the client resumed
    errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- direct


async def direct_stream(client, url: str, body: dict, start_at: float, stream: Stream) -> None:
    """The least a client can do: POST, read SSE lines, decode the JSON, note each content's arrival."""
    await asyncio.sleep(max(0.0, start_at - time.time()))
    stream.sent_at = time.time()
    try:
        async with client.stream("POST", url, json=body, headers={"Accept-Encoding": "identity"}) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    stream.done = True
                    continue
                payload = json.loads(data)
                for choice in payload.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content") or ""
                    if text:
                        stream.arrivals.append(time.time())
                        stream.pieces.append(text)
                usage = payload.get("usage")
                if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                    stream.tokens = int(usage["completion_tokens"])
    except Exception as exc:  # recorded and reported; the run then fails
        stream.error = f"{type(exc).__name__}: {exc}"


async def run_direct(url: str, body: dict, schedule: list[float]) -> list[Stream]:
    """Two streams per battle slot, each started at the slot's offset from a common start."""
    import httpx

    streams = [Stream() for _ in range(2 * len(schedule))]
    limits = httpx.Limits(max_connections=len(streams) + 8, max_keepalive_connections=len(streams) + 8)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=limits) as client:
        start = time.time() + 0.1
        await asyncio.gather(*(direct_stream(client, url, body, start + schedule[i // 2], stream)
                               for i, stream in enumerate(streams)))
    return streams


# ---------------------------------------------------------------------------------------------- arena


@dataclass
class Gate:
    """Every client connects first; then the prompts go out on the schedule from a common start."""

    total: int
    connected: int = 0
    start_at: float = 0.0
    go: asyncio.Event = field(default_factory=asyncio.Event)
    all_connected: asyncio.Event = field(default_factory=asyncio.Event)

    def arrive(self) -> None:
        self.connected += 1
        if self.connected >= self.total:
            self.all_connected.set()


async def rater(run: BattleRun, ws_url: str, origin: str, cookie_name: str, offset: float, gate: Gate,
                timeout_s: float) -> None:
    """One rater: connect, wait for the common start, prompt, read every frame, vote on "ready".

    Like the battle page, a connection the server drops is reopened after 250 ms and the battle
    resumed; the drops are counted and reported.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    headers = {"Cookie": f"{cookie_name}={run.cookie}"}
    deadline = None
    arrived_at_gate = False
    prompted = False
    try:
        while True:
            try:
                async with connect(ws_url, origin=origin, additional_headers=headers, max_size=None,
                                   open_timeout=60, ping_interval=None) as ws:
                    if not arrived_at_gate:
                        gate.arrive()
                        arrived_at_gate = True
                    if not prompted:
                        await gate.go.wait()
                        await asyncio.sleep(max(0.0, gate.start_at + offset - time.time()))
                        sent_at = time.time()
                        await ws.send(json.dumps({"type": "prompt", "text": PROMPT}))
                        prompted = True
                        for stream in run.sides.values():
                            stream.sent_at = sent_at
                        deadline = time.monotonic() + timeout_s
                    elif run.battle_id:
                        await ws.send(json.dumps({"type": "resume", "battle": run.battle_id}))
                    else:
                        raise RuntimeError("the connection closed before the battle started")
                    await follow(run, ws, deadline)
                    return
            except ConnectionClosed as exc:
                run.drops += 1
                if run.drops > 20 or (deadline is not None and time.monotonic() > deadline):
                    raise RuntimeError(f"gave up after {run.drops} dropped connections") from exc
                await asyncio.sleep(0.25)
    except Exception as exc:  # recorded and reported; the run then fails
        run.errors.append(f"battle {run.index}: {type(exc).__name__}: {exc}")
    finally:
        if not arrived_at_gate:
            gate.arrive()


async def follow(run: BattleRun, ws, deadline: float) -> None:
    """Read frames until the battle is ready, then vote and wait for the reveal."""
    # "ready" may overtake a side's "done" (the other side's worker announces it), so read on until
    # both sides are done too, for at most READY_GRACE_S after "ready".
    ready_by = None
    while not (run.ready and all(s.done for s in run.sides.values())):
        if run.ready and ready_by is None:
            ready_by = time.monotonic() + READY_GRACE_S
        remaining = (ready_by or deadline) - time.monotonic()
        if remaining <= 0:
            if ready_by is not None:
                break  # a missing "done" is reported by the checks
            raise TimeoutError("no 'ready' in time")
        try:
            frame = json.loads(await asyncio.wait_for(ws.recv(), remaining))
        except TimeoutError:
            if ready_by is not None:
                break  # a missing "done" is reported by the checks
            missing = [side for side, stream in run.sides.items() if not stream.done]
            raise TimeoutError(f"no 'ready' in time (sides without 'done': {missing or 'none'})") from None
        arrived = time.time()
        kind = frame.get("type")
        if kind == "delta":
            run.sides[frame["side"]].delta(arrived, frame["seq"], frame["text"])
        elif kind == "done":
            run.sides[frame["side"]].done = True
        elif kind == "ready":
            run.ready = True
        elif kind == "state":
            run.battle_id = frame["battle"]
            if frame.get("turns"):
                last = frame["turns"][-1]
                for side in "ab":
                    run.sides[side].snapshot(last[side]["text"], last[side]["seq"], last[side]["status"])
                if frame.get("can_vote"):
                    run.ready = True
        elif kind == "turn":
            pass
        elif kind == "failed":
            run.sides[frame["side"]].error = frame.get("message") or "failed"
            raise RuntimeError(f"side {frame['side']} failed")
        elif kind == "error":
            raise RuntimeError(f"error frame {frame}")
        else:
            run.unexpected.append(str(kind))
    if not run.winner:
        run.winner = WINNERS[run.index % len(WINNERS)]
    await ws.send(json.dumps({"type": "vote", "winner": run.winner}))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), max(1.0, deadline - time.monotonic())))
        if frame.get("type") == "reveal":
            run.revealed = frame.get("winner") == run.winner and set(frame.get("sides") or {}) == {"a", "b"}
            return
        if frame.get("type") == "error":
            if frame.get("code") == "already_voted":
                return  # the vote went through before a dropped connection could answer: checked in the database
            raise RuntimeError(f"vote answered {frame}")


async def run_arena(runs: list[BattleRun], web_url: str, schedule: list[float], cookie_name: str,
                    timeout_s: float) -> None:
    ws_url = web_url.replace("http://", "ws://", 1) + "/ws/battle/"
    gate = Gate(total=len(runs))
    tasks = [asyncio.create_task(rater(run, ws_url, web_url, cookie_name, offset, gate, timeout_s))
             for run, offset in zip(runs, schedule)]
    await asyncio.wait_for(gate.all_connected.wait(), 120)
    gate.start_at = time.time() + 0.1
    gate.go.set()
    await asyncio.gather(*tasks)


# ---------------------------------------------------------------------------------------------- setup


def setup_registry(emulator_url: str, tokens: int):
    """Two contenders on the emulated model, on two backend servers marked up, with room for every stream."""
    from arena.models import ArenaModel, BackendServer, DecodingPreset, HealthStatus

    preset = DecodingPreset.objects.create(name="bench-preset", temperature=0.7, max_new_tokens=tokens + 56, seed=1)
    contenders = []
    for label in ("a", "b"):
        server = BackendServer.objects.create(
            name=f"bench-tgi-{label}", kind="tgi", base_url=f"{emulator_url}/tgi/{MODEL}",
            health_status=HealthStatus.UP, max_concurrency=10_000, stall_timeout_s=30, deadline_s=120)
        contenders.append(ArenaModel.objects.create(
            display_name=f"Bench contender {label.upper()}", server=server, backend_model_id="tgi", preset=preset,
            enabled=True))
    return contenders


def request_of(contender) -> tuple[str, dict]:
    """The exact URL and body the worker's adapter sends for this contender and prompt."""
    from arena.services.streaming import conversation_for
    from workers.backends import get_adapter

    endpoint = contender.endpoint()
    path, body = get_adapter(endpoint.kind).request_for(endpoint, conversation_for(contender, [("user", PROMPT)]),
                                                        contender.preset.params())
    return endpoint.base_url.rstrip("/") + path, body


# ---------------------------------------------------------------------------------------------- checks


@dataclass
class Integrity:
    streams: int = 0
    deltas: int = 0
    gaps: int = 0
    reordered: int = 0
    mismatched: int = 0
    unfinished: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def lost_or_reordered(self) -> int:
        return self.gaps + self.reordered + self.mismatched + self.unfinished

    def note(self, message: str) -> None:
        if len(self.problems) < 10:
            self.problems.append(message)


def check_streams(runs: list[BattleRun]) -> tuple[Integrity, dict[str, list[float]]]:
    """Compare what every client received with the database; collect the per-stream timing segments."""
    from arena.models import Battle, Generation, GenerationStatus

    result = Integrity()
    segments: dict[str, list[float]] = {"web": [], "queue": [], "submit": [], "pickup": [], "worker": [],
                                        "backend_ttft": [], "publish": []}
    for run in runs:
        if not run.battle_id:
            result.failed += 2
            result.note(f"battle {run.index}: never started ({'; '.join(run.errors) or 'no state frame'})")
            continue
        battle = Battle.objects.get(public_id=run.battle_id)
        rows = {g.side: g for g in Generation.objects.filter(turn__battle=battle).select_related("turn")}
        for side, stream in run.sides.items():
            result.streams += 1
            result.deltas += len(stream.arrivals)
            row = rows.get(side)
            if row is None or row.status != GenerationStatus.DONE or stream.error:
                result.failed += 1
                result.note(f"battle {run.index} side {side}: status {row.status if row else 'missing'} "
                            f"{stream.error}")
                continue
            gaps, reordered = stream.gaps, stream.reordered
            mismatched = int(stream.text != row.text)
            unfinished = int(not stream.done)
            result.gaps += gaps
            result.reordered += reordered
            result.mismatched += mismatched
            result.unfinished += unfinished
            if gaps or reordered or mismatched or unfinished:
                result.note(f"battle {run.index} side {side}: {len(stream.arrivals)} deltas, gaps {gaps}, reordered "
                            f"{reordered}, text {'differs' if mismatched else 'same'}, done {stream.done}, "
                            f"connections dropped {run.drops}")
            stream.tokens = row.output_tokens
            if stream.arrivals:
                created = row.turn.created_at.timestamp()
                started = row.started_at.timestamp()
                segments["web"].append((created - stream.sent_at) * 1000.0)
                segments["queue"].append((started - created) * 1000.0)
                segments["submit"].append((row.created_at.timestamp() - created) * 1000.0)
                segments["pickup"].append((started - row.created_at.timestamp()) * 1000.0)
                segments["worker"].append((stream.arrivals[0] - started) * 1000.0)
                if row.time_to_first_token_ms is not None:
                    segments["backend_ttft"].append(row.time_to_first_token_ms)
                    segments["publish"].append((stream.arrivals[0] - started) * 1000.0 - row.time_to_first_token_ms)
        if run.unexpected:
            result.note(f"battle {run.index}: unexpected frames {sorted(set(run.unexpected))}")
    return result, segments


def check_votes(runs: list[BattleRun]) -> tuple[int, int, int, int]:
    """(votes sent, reveals received, votes stored, stored votes matching what was sent)."""
    from arena.models import Vote

    sent = sum(1 for run in runs if run.winner)
    reveals = sum(1 for run in runs if run.revealed)
    ids = [uuid.UUID(run.battle_id) for run in runs if run.battle_id]
    stored = {v.battle.public_id.hex: v.winner for v in Vote.objects.select_related("battle")
              .filter(battle__public_id__in=ids)}
    matching = sum(1 for run in runs if run.winner and stored.get(run.battle_id) == run.winner)
    return sent, reveals, len(stored), matching


# ---------------------------------------------------------------------------------------------- output


def fmt(value: float | None, width: int = 10, digits: int = 1) -> str:
    if value is None or value != value:
        return f"{'n/a':>{width}}"
    return f"{value:>{width}.{digits}f}"


def aggregate_rate(streams: list[Stream]) -> float | None:
    """Tokens delivered to clients per second, over all streams, from the first request to the last piece."""
    finished = [s for s in streams if s.arrivals and s.tokens]
    if not finished:
        return None
    span = max(s.arrivals[-1] for s in finished) - min(s.sent_at for s in finished)
    return sum(s.tokens for s in finished) / span if span > 0 else None


def host_busy_above_ms(ttft_ms: float) -> float:
    """A direct stream's TTFT p50 above this means the host itself was slow during the run."""
    return 1.5 * ttft_ms + 20.0


def report(args, direct: list[Stream], runs: list[BattleRun], integrity: Integrity,
           segments: dict[str, list[float]], votes: tuple[int, int, int, int], same_output: int,
           load_before: float, logs: dict[str, int], cpu: dict[str, float], wall: float) -> None:
    arena_streams = [s for run in runs for s in run.sides.values()]
    d_ttft = [s.ttft_ms for s in direct if s.ttft_ms is not None]
    a_ttft = [s.ttft_ms for s in arena_streams if s.ttft_ms is not None]
    d_rate = [r for r in (s.rate() for s in direct) if r]
    a_rate = [r for r in (s.rate() for s in arena_streams) if r]
    added50 = percentile(a_ttft, 0.5) - percentile(d_ttft, 0.5)
    added99 = percentile(a_ttft, 0.99) - percentile(d_ttft, 0.99)

    print(f"Streaming through the arena: {args.battles} battles ({2 * args.battles} streams) over real WebSockets to "
          f"uvicorn, {args.workers} Celery worker process(es) (threads, concurrency {args.concurrency}), Redis, "
          "PostgreSQL; loopback.")
    print(f"Emulated model (TGI chat): TTFT {args.ttft_ms:g} ms, {args.tokens_per_second:g} tokens/s, "
          f"{args.tokens} tokens. Prompts spread evenly over {args.ramp_s:g} s; direct baseline: "
          f"{2 * args.battles} httpx streams on the same schedule.")
    print(f"Host: {os.cpu_count()} CPUs, load average {load_before:.1f} when the arena round started "
          f"(other work on the host counts against every process here).")
    print()
    header = f"{'':<34}{'direct':>10}{'arena':>10}{'added':>10}   goal for added"
    print(header)
    print("-" * len(header))
    print(f"{'TTFT p50 (ms)':<34}{fmt(percentile(d_ttft, 0.5))}{fmt(percentile(a_ttft, 0.5))}{fmt(added50)}"
          f"   <= {GOAL_P50_MS:g} ms: {'met' if added50 <= GOAL_P50_MS else f'MISSED by {added50 - GOAL_P50_MS:.1f} ms'}")
    print(f"{'TTFT p99 (ms)':<34}{fmt(percentile(d_ttft, 0.99))}{fmt(percentile(a_ttft, 0.99))}{fmt(added99)}"
          f"   <= {GOAL_P99_MS:g} ms: {'met' if added99 <= GOAL_P99_MS else f'MISSED by {added99 - GOAL_P99_MS:.1f} ms'}")
    print(f"{'TTFT max (ms)':<34}{fmt(max(d_ttft, default=None))}{fmt(max(a_ttft, default=None))}")
    print(f"{'tokens/s per stream, p50':<34}{fmt(statistics.median(d_rate) if d_rate else None)}"
          f"{fmt(statistics.median(a_rate) if a_rate else None)}")
    print(f"{'tokens/s per stream, p1 (slowest)':<34}{fmt(percentile(d_rate, 0.01))}{fmt(percentile(a_rate, 0.01))}")
    print(f"{'tokens/s delivered, all streams':<34}{fmt(aggregate_rate(direct), digits=0)}"
          f"{fmt(aggregate_rate(arena_streams), digits=0)}")
    print("added: the arena's percentile minus the direct one; TTFT: prompt frame (or request) sent -> first text "
          "received; tokens/s per stream: (tokens - 1) / (last piece - first piece).")
    direct50 = percentile(d_ttft, 0.5)
    if direct50 is not None and direct50 > host_busy_above_ms(args.ttft_ms):
        print(f"Host check: the direct baseline's TTFT p50 was {direct50:.1f} ms against the emulator's "
              f"{args.ttft_ms:g} ms: the host was busy in this run. Compare the added figures only between runs "
              "whose direct baseline stayed near the emulator's TTFT.")
    print()
    print("Where the arena's first token spends its time (ms per stream, p50 / p99, from the rows' timestamps):")
    rows = [
        ("web", "prompt frame sent -> turn row created (consumer, battle_start, turn_submit)"),
        ("queue", "turn row created -> generation claimed by a worker"),
        ("submit", "  turn row -> this side's generation row (rest of turn_submit before commit)"),
        ("pickup", "  generation row -> claimed (commit, enqueue, broker, worker thread, claim)"),
        ("worker", "claimed -> first delta at the client"),
        ("backend_ttft", "  of which backend TTFT as the worker's adapter measured it"),
        ("publish", "  the rest (history, slot, first flush, channel layer, consumer, WebSocket)"),
    ]
    for key, label in rows:
        values = segments.get(key) or []
        print(f"  {label:<84}{fmt(percentile(values, 0.5), 7)} /{fmt(percentile(values, 0.99), 7)}")
    busiest = sorted(cpu.items(), key=lambda item: -item[1])
    print(f"CPU used during the arena round ({wall:.1f} s wall, {os.cpu_count()} CPUs): "
          + ", ".join(f"{name} {seconds:.1f} s ({100 * seconds / wall:.0f}%)" for name, seconds in busiest))
    print()
    ok = integrity.lost_or_reordered == 0 and integrity.failed == 0
    print(f"Integrity: {integrity.streams} streams, {integrity.deltas} deltas received; seq gaps {integrity.gaps}, "
          f"reordered or repeated {integrity.reordered}, text differing from Generation.text {integrity.mismatched}, "
          f"without 'done' {integrity.unfinished}, failed {integrity.failed} -> "
          f"lost or reordered: {integrity.lost_or_reordered} (must be 0) {'OK' if ok else 'FAIL'}")
    print(f"Same text as the direct stream of the same request: {same_output} of {integrity.streams} streams")
    drops = [run.drops for run in runs if run.drops]
    print(f"WebSocket connections the server closed (the client reopened and resumed, as the battle page does): "
          f"{sum(drops)} in {len(drops)} battles; consumers that died of a Redis read timeout (uvicorn log): "
          f"{logs['read_timeouts']}")
    print(f"Group messages channels_redis refused as over capacity (worker log, 'channels over capacity'): "
          f"{logs['over_capacity']}")
    for problem in integrity.problems:
        print(f"  ! {problem}")
    sent, reveals, stored, matching = votes
    votes_ok = sent == args.battles and stored == sent and matching == sent
    print(f"Votes: sent {sent}, revealed {reveals}, stored {stored}, stored as sent {matching} (of {args.battles} "
          f"battles) -> {'OK' if votes_ok else 'FAIL'}")
    errors = [e for run in runs for e in run.errors]
    for error in errors[:10]:
        print(f"  ! {error}")
    direct_errors = [s.error for s in direct if s.error]
    for error in direct_errors[:5]:
        print(f"  ! direct: {error}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--battles", type=int, default=50, help="concurrent battles (two streams each)")
    parser.add_argument("--tokens", type=int, default=200, help="length of every answer, in tokens")
    parser.add_argument("--tokens-per-second", type=float, default=100.0, help="the emulated model's decode rate")
    parser.add_argument("--ttft-ms", type=float, default=50.0, help="the emulated model's time to first token")
    parser.add_argument("--ramp-s", type=float, default=1.0,
                        help="spread the prompts evenly over this many seconds (0: all at once)")
    parser.add_argument("--concurrency", type=int, default=128, help="Celery worker threads (per worker process)")
    parser.add_argument("--workers", type=int, default=1,
                        help="Celery worker processes (production scales generation by adding them)")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="give up on a battle after this long")
    parser.add_argument("--db-conn-max-age", type=int, default=None, metavar="SECONDS",
                        help="DB_CONN_MAX_AGE for the web and worker processes (above 0: persistent connections instead of "
                             "the pool docker/env.example sets); unset keeps production's settings")
    args = parser.parse_args()
    if args.battles < 1 or args.tokens < 2 or args.workers < 1:
        parser.error("--battles and --workers must be at least 1 and --tokens at least 2")

    from workers.emulator import EmulatedModel

    model = EmulatedModel(name=MODEL, style="terse", ttft_ms=args.ttft_ms, tokens_per_second=args.tokens_per_second,
                          max_tokens=args.tokens, seed=11)
    schedule = [args.ramp_s * i / args.battles for i in range(args.battles)]

    def bench() -> int:
        with Stack(prefix="arena-bench-streaming-") as stack:
            extra = {} if args.db_conn_max_age is None else {"DB_CONN_MAX_AGE": str(args.db_conn_max_age)}
            stack.start_services(**extra)
            emulator_url = stack.start_emulator([model])
            from django.conf import settings

            contenders = setup_registry(emulator_url, args.tokens)
            users = make_raters(args.battles + 1, prefix="bench-rater-")
            warmup = [BattleRun(index=0, cookie=session_cookie_for(users[-1]))]
            runs = [BattleRun(index=i, cookie=session_cookie_for(user)) for i, user in enumerate(users[:-1])]
            web_url = stack.start_uvicorn()
            for number in range(args.workers):
                stack.start_celery(concurrency=args.concurrency, name="celery" if number == 0 else f"celery{number + 1}")
            url, body = request_of(contenders[0])
            if request_of(contenders[1])[1] != body:
                raise StackError("the two contenders would not send the same request")

            say(f"direct baseline: {2 * args.battles} streams")
            asyncio.run(run_direct(url, body, schedule[:2]))  # warm-up: connections, emulator code paths
            direct = asyncio.run(run_direct(url, body, schedule))
            say("arena: one warm-up battle, not measured")
            asyncio.run(run_arena(warmup, web_url, [0.0], settings.SESSION_COOKIE_NAME, args.timeout_s))
            if warmup[0].errors or not warmup[0].revealed:
                raise StackError(f"the warm-up battle did not complete: {warmup[0].errors}")
            load_before = os.getloadavg()[0]
            say(f"arena: {args.battles} battles")
            cpu_before, own_before, wall_before = stack.cpu_seconds(), time.process_time(), time.monotonic()
            asyncio.run(run_arena(runs, web_url, schedule, settings.SESSION_COOKIE_NAME, args.timeout_s))
            cpu_after, own_after, wall = stack.cpu_seconds(), time.process_time(), time.monotonic() - wall_before
            cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
            cpu["bench clients"] = own_after - own_before
            dead = stack.check_children()
            if dead:
                raise StackError(f"a process died during the run: {', '.join(dead)}")

            integrity, segments = check_streams(runs)
            votes = check_votes(runs)
            reference = next((s.text for s in direct if s.done and not s.error), None)
            same_output = sum(1 for run in runs for s in run.sides.values() if reference and s.text == reference)
            workers = ["celery"] + [f"celery{n + 1}" for n in range(1, args.workers)]
            logs = {"over_capacity": sum(stack.log_count(name, "channels over capacity") for name in workers),
                    "read_timeouts": stack.log_count("uvicorn", "redis.exceptions.TimeoutError")}
            report(args, direct, runs, integrity, segments, votes, same_output, load_before, logs, cpu, wall)
            sent, reveals, stored, matching = votes
            failed = (integrity.lost_or_reordered or integrity.failed or any(s.error or not s.done for s in direct)
                      or not (sent == stored == matching == args.battles))
            if failed:
                stack.failed = True
                return 1
            return 0

    return exit_status(bench)


if __name__ == "__main__":
    sys.exit(main())
