"""Simulated raters over real WebSockets against the production topology on loopback, for minutes.

Starts throwaway PostgreSQL and Redis (the test runner's classes), migrates, then real processes:
the backend emulator (several models, over TGI, Ollama and OpenAI-compatible protocols, so pair
sampling has a choice), uvicorn serving arena.asgi:application and a Celery worker on the thread
pool. Every rater (group "rater", with a logged-in session) opens a WebSocket with its session
cookie and Origin header and loops until the time is up, pausing ``--think-s`` (0.5x to 1.5x, at
random) between actions as a person reading and typing would:

    new battle -> prompt -> answers stream until "ready" -> (sometimes) a second prompt
    -> (sometimes) regenerate -> vote (random winner) -> read the reveal -> next battle

Sometimes a rater stops the answers while they stream (and then regenerates them, as the page
offers), and sometimes it drops its connection mid-stream, reconnects and resumes the battle,
rebuilding the text from the state frame plus the deltas after it. When the time is up each rater
finishes the battle it is in (within ``--drain-s``), then the database is compared with what the
clients sent and what the server acknowledged: battles, turns, votes (stored as sent), generations
by status, and every finished answer's text as the client assembled it against Generation.text.

Like the battle page, a client applies a state frame the server sends unasked (it missed a batch
and heals the gap with a snapshot) and takes a repeated "ready" in its stride; both are counted.

Prints counts, errors by kind, reconnects, p50/p99 latencies (connect, prompt -> first delta,
vote -> reveal, and a few more), where the first delta's time goes (from the rows' timestamps),
CPU per process and "Goal: 0 errors, 0 lost" with PASS or FAIL. Errors are what the clients met
(error frames, timeouts, failed sides, unexpected frames, closed connections) plus every exception
the web, worker or emulator process logged with a traceback, and generations failed or stuck.
Exits 1 if anything was lost or any error occurred, 2 if the stack could not start, 130 on Ctrl-C.

    .venv/bin/python bench/load.py [--raters 100] [--minutes 10] [--think-s 5.0] [--seed 1]
                                   [--ttft-ms 100] [--tokens-per-second 50] [--tokens 60]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _topology import Stack, exit_status, make_raters, percentile, say, session_cookie_for  # noqa: E402

WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")
# (emulated model name, style, protocol it is served over): several, so pairs vary.
MODELS = (
    ("load-terse-7b", "terse", "tgi"),
    ("load-markdown-13b", "markdown", "tgi"),
    ("load-coder-34b", "code", "ollama"),
    ("load-chat-8b", "terse", "openai"),
    ("load-notes-70b", "markdown", "openai"),
)
PROMPTS = (
    "Explain the difference between a process and a thread.",
    "Write a short poem about autumn in a city.",
    "How do I reverse a linked list in Python?",
    "Summarise the causes of the French Revolution in a paragraph.",
    "What is a good name for a bakery that also sells books?",
    "Give me three tips for a first job interview.",
    "Why is the sky blue?",
    "Compare PostgreSQL and SQLite for a small web application.",
)
FOLLOW_UPS = (
    "Can you make that shorter?",
    "Give an example.",
    "Now explain it to a ten-year-old.",
    "What are the trade-offs?",
)
# How often a rater does each thing (per battle or per turn).
P_SECOND_TURN = 0.3      # per battle: a follow-up prompt after the first answers
P_RECONNECT = 0.12       # per turn: the connection drops mid-stream; reconnect and resume
P_STOP = 0.08            # per turn: stop the answers mid-stream, then regenerate them
P_REGENERATE = 0.08      # per battle: regenerate the last answers before voting
READY_GRACE_S = 2.0      # "ready" may overtake a side's last "done": wait this long for it
MAX_CONSECUTIVE_ERRORS = 5


class RaterError(Exception):
    """Something went wrong in one battle; ``kind`` is the error's bucket in the report."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


class CutOff(Exception):
    """The drain deadline passed while a battle was still in progress."""


# ---------------------------------------------------------------------------------------------- records


@dataclass
class SideView:
    """One side's answer as the client assembled it: a snapshot (after a resume) plus later deltas."""

    base_text: str = ""
    base_seq: int = 0
    last_seq: int = 0
    pieces: list[str] = field(default_factory=list)
    gaps: int = 0
    reordered: int = 0
    status: str = "pending"                   # pending | done | stopped
    first_delta_at: float | None = None
    first_delta_wall: float | None = None     # time.time(), to set against the rows' timestamps

    @property
    def text(self) -> str:
        return self.base_text + "".join(self.pieces)

    def delta(self, seq: int, text: str, arrived: float) -> None:
        if seq <= self.last_seq:
            self.reordered += 1
        elif seq > self.last_seq + 1:
            self.gaps += seq - self.last_seq - 1
        self.last_seq = max(self.last_seq, seq)
        self.pieces.append(text)
        if self.first_delta_at is None:
            self.first_delta_at = arrived
            self.first_delta_wall = time.time()

    def snapshot(self, part: dict) -> None:
        self.base_text = part.get("text") or ""
        self.base_seq = self.last_seq = part.get("seq") or 0
        self.pieces = []
        self.gaps = self.reordered = 0   # a snapshot replaces what came before it
        if part.get("status") == "done":
            self.status = "done"
        elif part.get("status") == "stopped":
            self.status = "stopped"


@dataclass
class TurnView:
    index: int
    sides: dict[str, SideView] = field(default_factory=lambda: {"a": SideView(), "b": SideView()})
    ready: bool = False
    prompt_sent_wall: float | None = None     # time.time() the prompt left, if no reconnect came before


@dataclass
class BattleView:
    public_id: str
    turns: dict[int, TurnView] = field(default_factory=dict)
    vote_sent: str | None = None
    vote_acked: bool = False
    events: list[str] = field(default_factory=list)   # what the rater did, for the report of a problem


@dataclass
class Tally:
    """Everything the clients did and saw, summed over raters."""

    new_sent: int = 0
    battles: dict[str, BattleView] = field(default_factory=dict)
    prompts_sent: int = 0
    turns_acked: int = 0
    multi_turn_battles: int = 0
    votes_sent: int = 0
    votes_acked: int = 0
    stops_sent: int = 0
    stops_effective: int = 0                  # at least one side answered "stopped"
    regenerates_sent: int = 0
    regenerates_acked: int = 0
    reconnects: int = 0                       # planned: the client dropped its connection mid-stream
    server_closes: int = 0                    # unplanned: the server closed the connection
    cut_off: int = 0                          # battles still in progress at the drain deadline
    extra_ready: int = 0                      # "ready" frames after the first for the same answers
    heals: int = 0                            # state frames the server sent unasked (a batch was missed)
    late_frames: int = 0                      # done/delta after a snapshot already had the answer complete
    errors: Counter = field(default_factory=Counter)
    error_samples: dict[str, str] = field(default_factory=dict)
    unexpected_frames: Counter = field(default_factory=Counter)
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: {
        "connect": [], "new -> state": [], "prompt -> first delta": [], "prompt -> ready": [],
        "vote -> reveal": [], "resume -> state": [], "regenerate -> ready": []})

    def error(self, kind: str, detail: str = "") -> None:
        self.errors[kind] += 1
        if detail and kind not in self.error_samples:
            self.error_samples[kind] = detail[:300]


# ---------------------------------------------------------------------------------------------- one rater


class Rater:
    def __init__(self, *, index: int, cookie: str, ctx: Context) -> None:
        self.index = index
        self.headers = {"Cookie": f"{ctx.cookie_name}={cookie}"}
        self.ctx = ctx
        self.tally = ctx.tally
        self.rng = random.Random(ctx.seed * 100_003 + index)
        self.ws = None
        self.shown_battle: BattleView | None = None  # on screen: frames trailing its answers
        self.shown_turn: TurnView | None = None

    # ---- plumbing

    async def think(self) -> None:
        pause = self.ctx.think_s * self.rng.uniform(0.5, 1.5)
        await asyncio.sleep(max(0.0, min(pause, self.ctx.hard_deadline - time.monotonic())))

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        t0 = time.perf_counter()
        try:
            self.ws = await connect(self.ctx.ws_url, origin=self.ctx.origin, additional_headers=self.headers,
                                    open_timeout=self.ctx.timeout_s, ping_interval=None, max_size=None)
        except Exception as exc:
            raise RaterError("connect failed", f"{type(exc).__name__}: {exc}") from None
        self.tally.latency_ms["connect"].append((time.perf_counter() - t0) * 1000.0)

    async def close(self) -> None:
        if self.ws is not None:
            ws, self.ws = self.ws, None
            try:
                await asyncio.wait_for(ws.close(), 5)
            except Exception:
                pass

    async def send(self, frame: dict) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self.ws.send(json.dumps(frame))
        except ConnectionClosed as exc:
            self.tally.server_closes += 1
            raise RaterError("connection closed by server", str(exc)) from None

    async def recv(self, waiting_for: str, *, until: float | None = None) -> dict:
        from websockets.exceptions import ConnectionClosed

        limit = min(time.monotonic() + self.ctx.timeout_s, self.ctx.hard_deadline)
        if until is not None:
            limit = min(limit, until)
        remaining = limit - time.monotonic()
        if remaining <= 0:
            if time.monotonic() >= self.ctx.hard_deadline:
                raise CutOff()
            raise TimeoutError()
        try:
            raw = await asyncio.wait_for(self.ws.recv(), remaining)
        except TimeoutError:
            if time.monotonic() >= self.ctx.hard_deadline:
                raise CutOff() from None
            raise
        except ConnectionClosed as exc:
            self.tally.server_closes += 1
            raise RaterError("connection closed by server", f"waiting for {waiting_for}: {exc}") from None
        frame = json.loads(raw)
        if not isinstance(frame, dict):
            raise RaterError("malformed frame", raw[:200])
        return frame

    def heal(self, frame: dict) -> None:
        """A state frame the server sent unasked: it missed a batch and sends the battle as it stands,
        as the battle page applies it. Its last turn takes the snapshot's text (it may also be the
        battle just left, if the snapshot was on its way when the rater started the next one)."""
        self.tally.heals += 1
        battle = self.tally.battles.get(frame.get("battle"))
        if battle is None:
            raise RaterError("unasked state frame for an unknown battle", str(frame)[:300])
        battle.events.append(f"healed by an unasked state frame ({describe_state(frame)})")
        last = (frame.get("turns") or [None])[-1]
        turn = battle.turns.get(last["index"]) if last else None
        if turn is None:
            raise RaterError("unasked state frame for an unknown turn", describe_state(frame))
        for side in "ab":
            turn.sides[side].snapshot(last[side])
        if frame.get("can_vote"):
            turn.ready = True

    async def expect(self, kind: str, waiting_for: str) -> dict:
        """The next frame, which must be ``kind`` (an "error" frame is raised by its code).

        Frames that may trail the answers are applied or counted on the way: a repeated "ready"
        (each side's worker may announce it), an unasked state frame (a heal), and a "done" or
        "delta" that a snapshot had already made complete.
        """
        while True:
            try:
                frame = await self.recv(waiting_for)
            except TimeoutError:
                raise RaterError(f"timeout waiting for {waiting_for}") from None
            got = frame.get("type")
            stale = (kind == "state" and waiting_for == "state after new"
                     and frame.get("battle") in self.tally.battles)  # a heal of the battle just left
            if got == kind and not stale:
                return frame
            if got == "ready":
                self.tally.extra_ready += 1
            elif got == "state":
                self.heal(frame)
            elif got in ("done", "delta") and self.shown_turn is not None and self.shown_turn.ready:
                self.tally.late_frames += 1
                if got == "delta":
                    self.shown_battle.events.append(f"late delta after the answers were complete: {frame}"[:200])
            else:
                break
        if frame.get("type") == "error":
            raise RaterError(f"error frame: {frame.get('code') or 'no code'}", f"on {waiting_for}: {frame}")
        raise RaterError(f"unexpected frame on {waiting_for}", str(frame)[:300])

    # ---- the loop

    async def run(self) -> None:
        # Spread the first connections over one think time, as people arrive at different moments.
        await asyncio.sleep(self.rng.uniform(0, max(self.ctx.think_s, 0.5)))
        consecutive = 0
        try:
            while time.monotonic() < self.ctx.end_at and consecutive < MAX_CONSECUTIVE_ERRORS:
                try:
                    if self.ws is None:
                        await self.connect()
                    await self.battle()
                    consecutive = 0
                except RaterError as exc:
                    consecutive += 1
                    self.tally.error(exc.kind, f"rater {self.index}: {exc.detail}")
                    await self.close()  # a fresh page for the next battle
                    await asyncio.sleep(1.0)
                except CutOff:
                    self.tally.cut_off += 1
                    return
                except Exception as exc:  # recorded; the rater goes on with a new connection
                    consecutive += 1
                    self.tally.error(f"client exception {type(exc).__name__}", f"rater {self.index}: {exc!r}")
                    await self.close()
                    await asyncio.sleep(1.0)
            if consecutive >= MAX_CONSECUTIVE_ERRORS:
                self.tally.error("rater gave up after repeated errors", f"rater {self.index}")
        finally:
            await self.close()

    async def battle(self) -> None:
        tally = self.tally
        tally.new_sent += 1
        t0 = time.perf_counter()
        await self.send({"type": "new"})
        state = await self.expect("state", "state after new")
        tally.latency_ms["new -> state"].append((time.perf_counter() - t0) * 1000.0)
        battle = BattleView(public_id=state["battle"])
        tally.battles[battle.public_id] = battle
        self.shown_battle, self.shown_turn = battle, None
        await self.think()

        turns = 2 if self.rng.random() < P_SECOND_TURN else 1
        if turns == 2:
            tally.multi_turn_battles += 1
        for n in range(turns):
            prompt = self.rng.choice(PROMPTS) if n == 0 else self.rng.choice(FOLLOW_UPS)
            await self.prompt(battle, prompt)
            await self.think()
        if self.rng.random() < P_REGENERATE:
            await self.regenerate(battle, after_stop=False)
            await self.think()
        await self.vote(battle)
        await self.think()  # reading the reveal

    async def prompt(self, battle: BattleView, text: str) -> None:
        tally = self.tally
        tally.prompts_sent += 1
        sent_at, sent_wall = time.perf_counter(), time.time()
        await self.send({"type": "prompt", "text": text})
        ack = await self.expect("turn", "turn after prompt")
        tally.turns_acked += 1
        turn = TurnView(index=ack["index"], prompt_sent_wall=sent_wall)
        battle.turns[turn.index] = turn
        self.shown_turn = turn
        roll = self.rng.random()
        action = "reconnect" if roll < P_RECONNECT else "stop" if roll < P_RECONNECT + P_STOP else None
        after = self.rng.randint(1, 8)  # deltas (both sides together) before the drop or the stop
        stopped = await self.follow(battle, turn, sent_at=sent_at, action=action, action_after=after)
        if stopped:
            await self.think()
            await self.regenerate(battle, after_stop=True)

    async def regenerate(self, battle: BattleView, *, after_stop: bool) -> None:
        tally = self.tally
        tally.regenerates_sent += 1
        sent_at = time.perf_counter()
        await self.send({"type": "regenerate"})
        while True:
            frame = await self.expect_regenerated()
            if frame is not None:
                break
        tally.regenerates_acked += 1
        battle.events.append(f"regenerated turn {frame['index']}{' after a stop' if after_stop else ''}")
        turn = TurnView(index=frame["index"])
        battle.turns[turn.index] = turn
        self.shown_turn = turn
        await self.follow(battle, turn, sent_at=None, action=None, action_after=0)
        tally.latency_ms["regenerate -> ready"].append((time.perf_counter() - sent_at) * 1000.0)

    async def expect_regenerated(self) -> dict | None:
        """The "regenerated" frame; late frames of the replaced answers may come first and are skipped."""
        try:
            frame = await self.recv("regenerated")
        except TimeoutError:
            raise RaterError("timeout waiting for regenerated") from None
        kind = frame.get("type")
        if kind == "regenerated":
            return frame
        if kind == "error":
            raise RaterError(f"error frame: {frame.get('code') or 'no code'}", f"on regenerate: {frame}")
        if kind in ("delta", "done", "stopped", "ready", "notice", "state"):
            return None  # the replaced answers' last frames, or a snapshot of them
        raise RaterError("unexpected frame on regenerated", str(frame)[:300])

    async def follow(self, battle: BattleView, turn: TurnView, *, sent_at: float | None, action: str | None,
                     action_after: int) -> bool:
        """Read frames until both answers are in ("ready" and both "done"), or both sides are finished
        after a stop. Returns True if a side was stopped (the answers must be regenerated to vote)."""
        tally = self.tally
        deltas = 0
        acted = False
        stop_sent = False
        ready_by = None
        while True:
            sides = turn.sides.values()
            if stop_sent and all(s.status != "pending" for s in sides) and any(s.status == "stopped" for s in sides):
                tally.stops_effective += 1
                return True
            if turn.ready and all(s.status == "done" for s in sides):
                break
            if turn.ready and ready_by is None:
                ready_by = time.monotonic() + READY_GRACE_S
            try:
                frame = await self.recv("answers", until=ready_by)
            except TimeoutError:
                if ready_by is not None and time.monotonic() >= ready_by:
                    tally.error("no 'done' within 2 s of 'ready'",
                                f"battle {battle.public_id} turn {turn.index}: "
                                f"{[k for k, s in turn.sides.items() if s.status != 'done']}")
                    break
                raise RaterError("timeout waiting for answers",
                                 f"battle {battle.public_id} turn {turn.index}: sides "
                                 f"{ {k: s.status for k, s in turn.sides.items()} }, ready {turn.ready}") from None
            arrived = time.perf_counter()
            kind = frame.get("type")
            if kind == "delta":
                side = turn.sides[frame["side"]]
                first = side.first_delta_at is None
                side.delta(frame["seq"], frame["text"], arrived)
                if first and sent_at is not None:
                    tally.latency_ms["prompt -> first delta"].append((arrived - sent_at) * 1000.0)
                deltas += 1
                if action and not acted and deltas >= action_after:
                    acted = True
                    if action == "reconnect":
                        await self.reconnect(battle, turn)
                        sent_at = None  # later latencies would include the reconnect
                    else:
                        tally.stops_sent += 1
                        stop_sent = True
                        battle.events.append(f"turn {turn.index}: stop after {deltas} deltas")
                        await self.send({"type": "stop"})
            elif kind == "done":
                turn.sides[frame["side"]].status = "done"
            elif kind == "stopped":
                turn.sides[frame["side"]].status = "stopped"
            elif kind == "ready":
                if turn.ready:
                    tally.extra_ready += 1
                turn.ready = True
                if sent_at is not None:
                    tally.latency_ms["prompt -> ready"].append((arrived - sent_at) * 1000.0)
            elif kind == "notice":
                pass  # "Nothing to stop": both answers were already in
            elif kind == "state":
                self.heal(frame)
            elif kind == "failed":
                raise RaterError("generation failed", f"battle {battle.public_id} side {frame.get('side')}: "
                                                      f"{frame.get('message')}")
            elif kind == "error":
                raise RaterError(f"error frame: {frame.get('code') or 'no code'}", f"while streaming: {frame}")
            else:
                tally.unexpected_frames[str(kind)] += 1
                summary = str(frame)[:200]
                battle.events.append(f"unexpected frame in turn {turn.index}: {summary}")
                if str(kind) not in tally.error_samples:
                    tally.error_samples[f"unexpected frame {kind!r}"] = f"rater {self.index}: {summary}"[:300]
        return False

    async def reconnect(self, battle: BattleView, turn: TurnView) -> None:
        """Drop the connection mid-stream (a network blip, a reload), reconnect and resume the battle."""
        self.tally.reconnects += 1
        seen = {k: (v.last_seq, len(v.text), v.status) for k, v in turn.sides.items()}
        await self.close()
        await self.connect()
        t0 = time.perf_counter()
        await self.send({"type": "resume", "battle": battle.public_id})
        state = await self.expect("state", "state after resume")
        self.tally.latency_ms["resume -> state"].append((time.perf_counter() - t0) * 1000.0)
        if state.get("battle") != battle.public_id or not state.get("turns"):
            raise RaterError("resume returned another battle's state", str(state)[:300])
        last = state["turns"][-1]
        if last["index"] != turn.index:
            raise RaterError("resume returned another turn", f"expected {turn.index}, got {last['index']}")
        for side in "ab":
            turn.sides[side].snapshot(last[side])
        battle.events.append(f"turn {turn.index}: reconnected after (seq, chars, status) {seen}, snapshot "
                             f"{describe_state(state)}")
        if state.get("can_vote"):
            turn.ready = True

    async def vote(self, battle: BattleView) -> None:
        tally = self.tally
        winner = self.rng.choice(WINNERS)
        battle.vote_sent = winner
        tally.votes_sent += 1
        t0 = time.perf_counter()
        await self.send({"type": "vote", "winner": winner})
        frame = await self.expect("reveal", "reveal after vote")
        tally.latency_ms["vote -> reveal"].append((time.perf_counter() - t0) * 1000.0)
        if frame.get("winner") != winner or set(frame.get("sides") or {}) != {"a", "b"}:
            raise RaterError("reveal does not match the vote", str(frame)[:300])
        battle.vote_acked = True
        tally.votes_acked += 1


def describe_state(frame: dict) -> str:
    """A state frame in short: each turn's sides as (status, seq, characters)."""
    return str([(t["index"], {x: (t[x]["status"], t[x]["seq"], len(t[x]["text"] or "")) for x in "ab"})
                for t in frame.get("turns") or ()]) + f" can_vote={frame.get('can_vote')}"


@dataclass
class Context:
    ws_url: str
    origin: str
    cookie_name: str
    think_s: float
    timeout_s: float
    end_at: float
    hard_deadline: float
    seed: int
    tally: Tally


async def sample_backlog(redis_url: str, samples: list[int], stop: asyncio.Event) -> None:
    """Every second: messages waiting in Redis for the web process (its channel-layer inbox).

    channels_redis keeps one sorted set per process ("asgispecific.<process>!") and pops it one
    message per round trip; a growing backlog here means the web process is behind on reading,
    an empty one that any delay is before Redis (in the worker).
    """
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        while not stop.is_set():
            total = 0
            async for key in client.scan_iter(match="asgispecific.*", count=1000):
                total += await client.zcard(key)
            samples.append(total)
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
    except Exception as exc:  # a figure, not a check: report that it is missing
        samples.clear()
        samples.append(-1)
        say(f"backlog sampling stopped: {exc!r}")
    finally:
        await client.aclose()


def _quiet_cancellations(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    # On Ctrl-C asyncio.run cancels every rater; their cancellations are expected, not worth a traceback.
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


async def run_raters(cookies: list[str], ctx: Context, redis_url: str, backlog: list[int]) -> None:
    asyncio.get_running_loop().set_exception_handler(_quiet_cancellations)
    raters = [Rater(index=i, cookie=cookie, ctx=ctx) for i, cookie in enumerate(cookies)]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_backlog(redis_url, backlog, stop))
    tasks = [asyncio.create_task(r.run()) for r in raters]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), max(1.0, ctx.hard_deadline - time.monotonic() + 30))
    except TimeoutError:
        ctx.tally.error("raters still running 30 s after the drain deadline")
    finally:
        stop.set()
        await sampler


# ---------------------------------------------------------------------------------------------- setup


def emulated_models(args) -> list:
    from workers.emulator import EmulatedModel

    return [EmulatedModel(name=name, style=style, ttft_ms=args.ttft_ms, tokens_per_second=args.tokens_per_second,
                          max_tokens=args.tokens, seed=i + 1) for i, (name, style, _kind) in enumerate(MODELS)]


def setup_registry(emulator_url: str, tokens: int) -> list:
    """One backend server and contender per emulated model, marked up, with room for every stream."""
    from arena.models import ArenaModel, BackendServer, DecodingPreset, HealthStatus

    # Room to end on end-of-sequence at the model's natural length.
    preset = DecodingPreset.objects.create(name="load-preset", temperature=0.7, max_new_tokens=tokens + 40, seed=1)
    contenders = []
    for name, _style, kind in MODELS:
        base_url = f"{emulator_url}/tgi/{name}" if kind == "tgi" else f"{emulator_url}/{kind}"
        server = BackendServer.objects.create(
            name=f"load-{kind}-{name}", kind=kind, base_url=base_url, health_status=HealthStatus.UP,
            max_concurrency=10_000, stall_timeout_s=30, deadline_s=120)
        contenders.append(ArenaModel.objects.create(
            display_name=f"Load {name}", server=server, backend_model_id="tgi" if kind == "tgi" else name,
            preset=preset, enabled=True))
    return contenders


# ---------------------------------------------------------------------------------------------- checks


@dataclass
class DbCheck:
    battles: int = 0
    battles_by_status: Counter = field(default_factory=Counter)
    turns: int = 0
    votes: int = 0
    generations_by_status: Counter = field(default_factory=Counter)
    battles_missing: int = 0                  # acknowledged by a state frame, not in the database
    battles_unacked: int = 0                  # in the database, never acknowledged
    turns_missing: int = 0
    turns_unacked: int = 0
    votes_missing: int = 0                    # acknowledged by a reveal, not stored as sent
    votes_unacked_stored: int = 0             # sent, not acknowledged, stored anyway
    votes_stored_not_sent: int = 0
    answers_checked: int = 0
    answers_differing: int = 0                # a finished answer whose client text differs from the row
    answers_gaps: int = 0
    client_done_not_done: int = 0             # the client saw "done"; the row is not DONE
    problems: list[str] = field(default_factory=list)
    segments: dict[str, list[float]] = field(default_factory=lambda: {
        "web": [], "pickup": [], "backend_ttft": [], "deliver": [], "generation": []})

    def note(self, message: str) -> None:
        if len(self.problems) < 10:
            self.problems.append(message)

    @property
    def lost(self) -> int:
        return (self.battles_missing + self.turns_missing + self.votes_missing + self.answers_differing
                + self.answers_gaps + self.client_done_not_done)


def settle(timeout_s: float) -> int:
    """Wait for generations still queued or streaming (battles cut off at the end) to finish."""
    from arena.models import Generation, GenerationStatus

    deadline = time.monotonic() + timeout_s
    while True:
        pending = Generation.objects.filter(status__in=[GenerationStatus.QUEUED, GenerationStatus.STREAMING]).count()
        if pending == 0 or time.monotonic() > deadline:
            return pending
        time.sleep(0.5)


def check_database(tally: Tally) -> DbCheck:
    from django.db.models import Count

    from arena.models import Battle, Generation, Turn, Vote

    check = DbCheck()
    check.battles = Battle.objects.count()
    check.battles_by_status = Counter(dict(Battle.objects.values_list("status").annotate(n=Count("id"))))
    check.turns = Turn.objects.count()
    check.votes = Vote.objects.count()
    check.generations_by_status = Counter(dict(Generation.objects.values_list("status").annotate(n=Count("id"))))

    db_battles = {b.hex: pk for pk, b in Battle.objects.values_list("pk", "public_id")}
    check.battles_missing = sum(1 for public_id in tally.battles if public_id not in db_battles)
    check.battles_unacked = sum(1 for public_id in db_battles if public_id not in tally.battles)
    missing = [p for p in tally.battles if p not in db_battles][:3]
    if missing:
        check.note(f"battles acknowledged but not stored: {missing}")

    pk_to_public = {pk: public_id for public_id, pk in db_battles.items()}
    db_turns = {(pk_to_public[battle_id], index) for battle_id, index in Turn.objects.values_list("battle_id", "index")}
    acked_turns = {(b.public_id, index) for b in tally.battles.values() for index in b.turns}
    check.turns_missing = len(acked_turns - db_turns)
    check.turns_unacked = len(db_turns - acked_turns)
    if acked_turns - db_turns:
        check.note(f"turns acknowledged but not stored: {sorted(acked_turns - db_turns)[:3]}")

    stored_votes = {pk_to_public[battle_id]: winner for battle_id, winner in Vote.objects.values_list("battle_id",
                                                                                                     "winner")}
    for battle in tally.battles.values():
        stored = stored_votes.get(battle.public_id)
        if battle.vote_acked and stored != battle.vote_sent:
            check.votes_missing += 1
            check.note(f"battle {battle.public_id}: vote {battle.vote_sent!r} acknowledged, stored {stored!r}")
        elif not battle.vote_acked and battle.vote_sent and stored is not None:
            check.votes_unacked_stored += 1
        if stored is not None and not battle.vote_sent:
            check.votes_stored_not_sent += 1
    check.votes_stored_not_sent += sum(1 for public_id in stored_votes if public_id not in tally.battles)

    rows, times = {}, {}
    for battle_id, index, side, status, text, turn_created, started, finished, ttft in Generation.objects.values_list(
            "turn__battle_id", "turn__index", "side", "status", "text", "turn__created_at", "started_at",
            "finished_at", "time_to_first_token_ms"):
        rows[(pk_to_public[battle_id], index, side)] = (status, text)
        times[(pk_to_public[battle_id], index, side)] = (turn_created, started, finished, ttft)
    for battle in tally.battles.values():
        for index, turn in battle.turns.items():
            for side, view in turn.sides.items():
                if any("unexpected" in e for e in battle.events):
                    check.note(f"battle {battle.public_id}: {'; '.join(battle.events)}")
                if view.status != "done":
                    continue
                turn_created, started, finished, ttft = times.get((battle.public_id, index, side), (None,) * 4)
                if turn.prompt_sent_wall and view.first_delta_wall and turn_created and started:
                    seg = check.segments
                    seg["web"].append((turn_created.timestamp() - turn.prompt_sent_wall) * 1000.0)
                    seg["pickup"].append((started.timestamp() - turn_created.timestamp()) * 1000.0)
                    if ttft is not None:
                        seg["backend_ttft"].append(ttft)
                        seg["deliver"].append((view.first_delta_wall - started.timestamp()) * 1000.0 - ttft)
                    if finished:
                        seg["generation"].append((finished.timestamp() - started.timestamp()) * 1000.0)
                check.answers_checked += 1
                status, text = rows.get((battle.public_id, index, side), (None, None))
                if status != "done":
                    check.client_done_not_done += 1
                    check.note(f"battle {battle.public_id} turn {index} side {side}: client saw done, row {status}")
                    continue
                if view.gaps or view.reordered:
                    check.answers_gaps += 1
                    check.note(f"battle {battle.public_id} turn {index} side {side}: seq gaps {view.gaps}, "
                               f"reordered {view.reordered}")
                if view.text != text:
                    check.answers_differing += 1
                    check.note(f"battle {battle.public_id} turn {index} side {side}: client text "
                               f"({len(view.text)} chars, seq {view.last_seq}) differs from Generation.text "
                               f"({len(text)} chars); {'; '.join(battle.events) or 'no reconnect, stop or regenerate'}")
    return check


# ---------------------------------------------------------------------------------------------- output


def fmt(value: float | None, width: int = 9) -> str:
    if value is None or value != value:
        return f"{'n/a':>{width}}"
    return f"{value:>{width}.1f}"


def log_exceptions(path: Path) -> Counter:
    """Exceptions a child process logged with a traceback, by their last line (message shortened)."""
    found: Counter = Counter()
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return found
    for n, line in enumerate(lines):
        if not line.startswith("Traceback (most recent call last)"):
            continue
        for later in lines[n + 1:n + 400]:
            if later and not later[0].isspace() and not later.startswith("Traceback"):
                found[later[:110]] += 1
                break
    return found


def report(args, tally: Tally, check: DbCheck, pending: int, wall_s: float, load: tuple[float, float],
           cpu: dict[str, float], dead: list[str], logs: dict, backlog: list[int]) -> tuple[int, int]:
    kinds = ", ".join(sorted({kind for _n, _s, kind in MODELS}))
    print(f"Load: {args.raters} simulated raters for {args.minutes:g} min over real WebSockets to uvicorn, Celery "
          f"worker (threads, concurrency {args.concurrency}), Redis, PostgreSQL; loopback.")
    print(f"Emulated models: {len(MODELS)} ({kinds}), TTFT {args.ttft_ms:g} ms, {args.tokens_per_second:g} tokens/s, "
          f"{args.tokens} tokens; rater think time {args.think_s:g} s (0.5x-1.5x) between actions.")
    print(f"Host: {os.cpu_count()} CPUs, load average {load[0]:.1f} at the start and {load[1]:.1f} at the end "
          f"(other work on the host counts against every process here); wall {wall_s:.0f} s including the drain.")
    print()
    print(f"{'':<28}{'sent':>8}{'acked':>8}{'in db':>8}{'lost':>6}")
    print("-" * 58)
    print(f"{'battles (new)':<28}{tally.new_sent:>8}{len(tally.battles):>8}{check.battles:>8}{check.battles_missing:>6}")
    print(f"{'turns (prompt)':<28}{tally.prompts_sent:>8}{tally.turns_acked:>8}{check.turns:>8}{check.turns_missing:>6}")
    print(f"{'votes':<28}{tally.votes_sent:>8}{tally.votes_acked:>8}{check.votes:>8}{check.votes_missing:>6}")
    print(f"{'regenerations':<28}{tally.regenerates_sent:>8}{tally.regenerates_acked:>8}{'':>8}{'':>6}")
    print(f"{'stops':<28}{tally.stops_sent:>8}{tally.stops_effective:>8}{'':>8}{'':>6}")
    print(f"{'finished answers (text)':<28}{'':>8}{check.answers_checked:>8}{check.answers_checked - check.answers_differing - check.client_done_not_done:>8}"
          f"{check.answers_differing + check.answers_gaps + check.client_done_not_done:>6}")
    print("acked: state frame for new, turn frame for prompt, reveal (matching) for vote, regenerated frame, stop "
          "answered by 'stopped'; answers: client text (snapshot + deltas) equal to Generation.text, no seq gaps.")
    print(f"multi-turn battles {tally.multi_turn_battles}; reconnects mid-stream (client drops, resumes) "
          f"{tally.reconnects}; connections closed by the server {tally.server_closes}; battles cut off at the "
          f"drain deadline {tally.cut_off}")
    print(f"server frames the client took in its stride: repeated 'ready' {tally.extra_ready}; unasked state frames "
          f"(the consumer saw a seq gap and sent a snapshot, applied as the page does) {tally.heals}; 'done' or "
          f"'delta' after a snapshot had the answers complete {tally.late_frames}")
    gens = check.generations_by_status
    print(f"database: battles by status {dict(sorted(check.battles_by_status.items()))}; generations by status "
          f"{dict(sorted(gens.items()))} (total {sum(gens.values())}, 2 x turns = {2 * check.turns}); "
          f"still queued or streaming after settling: {pending}")
    print(f"votes stored without an acknowledgement {check.votes_unacked_stored}, stored but never sent "
          f"{check.votes_stored_not_sent}; turns stored but never acknowledged {check.turns_unacked}; battles stored "
          f"but never acknowledged {check.battles_unacked}")
    print()
    print(f"{'latency (ms)':<28}{'n':>7}{'p50':>9}{'p99':>9}{'max':>9}")
    print("-" * 62)
    for name, values in tally.latency_ms.items():
        print(f"{name:<28}{len(values):>7}{fmt(percentile(values, 0.5))}{fmt(percentile(values, 0.99))}"
              f"{fmt(max(values, default=None))}")
    print("connect: WebSocket handshake (TCP, upgrade, session auth); prompt -> first delta: per side; "
          "regenerate -> ready: includes the stream.")
    print("Where prompt -> first delta goes (ms per side, p50 / p99, from the rows' timestamps; prompts with no "
          "reconnect before the first delta):")
    for key, label in (("web", "prompt sent -> turn row created (web process: consumer, turn_submit)"),
                       ("pickup", "turn row created -> generation claimed by a worker (commit, broker, thread)"),
                       ("backend_ttft", "claimed -> ... backend time to first token, as the worker measured it"),
                       ("deliver", "the rest up to the client (history, publish, channel layer, consumer)"),
                       ("generation", "for scale: claimed -> finished (whole answer, worker side)")):
        values = check.segments[key]
        print(f"  {label:<84}{fmt(percentile(values, 0.5), 8)} /{fmt(percentile(values, 0.99), 8)}")
    if backlog and backlog[0] >= 0:
        print(f"  channel-layer messages waiting in Redis for the web process, sampled each second: p50 "
              f"{percentile(backlog, 0.5):.0f}, p99 {percentile(backlog, 0.99):.0f}, max {max(backlog)} "
              f"({len(backlog)} samples)")
    busiest = sorted(cpu.items(), key=lambda item: -item[1])
    print(f"CPU over the run ({wall_s:.0f} s wall, {os.cpu_count()} CPUs): "
          + ", ".join(f"{name} {seconds:.0f} s ({100 * seconds / wall_s:.0f}%)" for name, seconds in busiest))
    print(f"logs: channel layer over capacity (worker) {logs['over_capacity']}, Redis read timeouts (uvicorn) "
          f"{logs['read_timeouts']}, exceptions with a traceback (uvicorn "
          f"{sum(logs['exceptions']['uvicorn'].values())}, worker {sum(logs['exceptions']['celery'].values())})")
    print()
    errors = Counter(tally.errors)
    failed_rows = gens.get("failed", 0)
    if failed_rows:
        errors["generations failed (database)"] += failed_rows
    if pending:
        errors["generations still queued or streaming"] += pending
    if dead:
        errors["process died: " + ", ".join(dead)] += 1
    if sum(gens.values()) != 2 * check.turns:
        errors["generation rows != 2 x turns"] += 1
    for kind, count in tally.unexpected_frames.items():
        errors[f"unexpected frame {kind!r}"] += count
    for process, label in (("uvicorn", "web"), ("celery", "worker"), ("emulator", "emulator")):
        for exception, count in logs["exceptions"][process].items():
            errors[f"{label} log: {exception}"] += count
    print("errors by kind:" + ("" if errors else " none"))
    for kind, count in errors.most_common():
        sample = tally.error_samples.get(kind)
        print(f"  {count:>6}  {kind}" + (f"  (e.g. {sample})" if sample else ""))
    for problem in check.problems:
        print(f"  ! {problem}")
    n_errors = sum(errors.values())
    verdict = "PASS" if n_errors == 0 and check.lost == 0 else "FAIL"
    print(f"Goal: 0 errors, 0 lost. Errors {n_errors}, lost {check.lost} -> {verdict}")
    return n_errors, check.lost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--raters", type=int, default=100, help="simulated raters, one WebSocket each")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long raters start new battles")
    parser.add_argument("--think-s", type=float, default=5.0, help="mean pause between a rater's actions")
    parser.add_argument("--ttft-ms", type=float, default=100.0, help="the emulated models' time to first token")
    parser.add_argument("--tokens-per-second", type=float, default=50.0, help="the emulated models' decode rate")
    parser.add_argument("--tokens", type=int, default=60, help="length of every answer, in tokens")
    parser.add_argument("--concurrency", type=int, default=128, help="Celery worker threads")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="longest wait for any one frame")
    parser.add_argument("--drain-s", type=float, default=60.0,
                        help="after the time is up, how long raters may take to finish their battle")
    parser.add_argument("--seed", type=int, default=1, help="seed of the raters' choices")
    args = parser.parse_args()
    if args.raters < 1 or args.minutes <= 0 or args.think_s < 0 or args.tokens < 2:
        parser.error("--raters must be at least 1, --minutes positive, --think-s not negative, --tokens at least 2")


    def bench() -> int:
        with Stack(prefix="arena-bench-load-") as stack:
            stack.start_services()
            emulator_url = stack.start_emulator(emulated_models(args))
            from django.conf import settings

            setup_registry(emulator_url, args.tokens)
            users = make_raters(args.raters, prefix="load-rater-")
            cookies = [session_cookie_for(user) for user in users]
            web_url = stack.start_uvicorn()
            stack.start_celery(concurrency=args.concurrency)

            tally = Tally()
            start = time.monotonic()
            ctx = Context(ws_url=web_url.replace("http://", "ws://", 1) + "/ws/battle/", origin=web_url,
                          cookie_name=settings.SESSION_COOKIE_NAME, think_s=args.think_s, timeout_s=args.timeout_s,
                          end_at=start + args.minutes * 60.0, hard_deadline=start + args.minutes * 60.0 + args.drain_s,
                          seed=args.seed, tally=tally)
            load_start = os.getloadavg()[0]
            cpu_before, own_before = stack.cpu_seconds(), time.process_time()
            say(f"{args.raters} raters for {args.minutes:g} min (think {args.think_s:g} s)")
            backlog: list[int] = []
            asyncio.run(run_raters(cookies, ctx, stack.env["REDIS_URL"], backlog))
            wall = time.monotonic() - start
            cpu_after, own_after = stack.cpu_seconds(), time.process_time()
            cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
            cpu["bench clients"] = own_after - own_before
            load_end = os.getloadavg()[0]
            say("raters done; checking the database")
            pending = settle(30.0)
            dead = stack.check_children()
            check = check_database(tally)
            logs = {"over_capacity": stack.log_count("celery", "channels over capacity"),
                    "read_timeouts": stack.log_count("uvicorn", "redis.exceptions.TimeoutError"),
                    "exceptions": {name: log_exceptions(stack.workdir / f"{name}.log")
                                   for name in ("uvicorn", "celery", "emulator")}}
            n_errors, lost = report(args, tally, check, pending, wall, (load_start, load_end), cpu, dead, logs,
                                    backlog)
            if n_errors or lost:
                stack.failed = True
                return 1
            return 0

    return exit_status(bench)


if __name__ == "__main__":
    sys.exit(main())
