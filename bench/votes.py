"""Votes accepted per second on PostgreSQL, through the real path, with every vote accounted for.

Starts throwaway PostgreSQL and Redis (the test runner's classes), migrates, and prepares finished
battles directly in the database (bulk-created battles, turns and DONE generations, owned by raters
in the "rater" group, spread so no rater reaches the daily vote cap). Then casts votes:

1. through ``arena.services.battles.vote_cast`` from a pool of threads (one database connection
   each), as the web process's database threads call it;
2. end to end over real WebSockets to a uvicorn process serving arena.asgi:application: each
   rater's connection resumes each of its battles and sends the vote frame; the latency is from
   the vote frame to its "reveal";
3. a double-vote storm: the same battle voted 10 times at once, through both paths; exactly one
   vote may be stored and the others must be refused.

Prints votes/s, p50/p99 latency, votes sent, accepted, refused and stored, and lost (accepted or
sent but not stored as sent: must be 0). Each vote also asks for the online Elo drain, as in
production (one Redis call per vote, one task on the Redis broker per drain window); no worker
consumes those tasks unless --with-worker is given. Exits non-zero
if a vote is lost or a storm stores anything but exactly one vote.

A WebSocket the server closes is reopened and its battle resumed, as the battle page does; such
drops are counted and printed.

    .venv/bin/python bench/votes.py [--votes 4000] [--threads 16] [--ws-votes 1000]
                                    [--ws-connections 50] [--storm-battles 20] [--storm-size 10]
                                    [--with-worker] [--db-conn-max-age SECONDS]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _topology import Stack, StackError, exit_status, make_raters, percentile, say, session_cookie_for  # noqa: E402

GOAL_VOTES_PER_SECOND = 300.0
WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")
# Below the default daily cap (ARENA_DAILY_VOTE_CAP = 500), so the cap never refuses a bench vote.
VOTES_PER_RATER = 400
ANSWER = "A finished answer, stored directly for the vote benchmark. " * 8


@dataclass
class Outcome:
    """One path's votes: what was sent, what the server said, how long it took."""

    label: str
    parallelism: str
    sent: dict[int, str] = field(default_factory=dict)        # battle pk -> winner sent
    accepted: set[int] = field(default_factory=set)
    refused: Counter = field(default_factory=Counter)          # error code -> count
    unanswered: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    stored: int = 0
    stored_as_sent: int = 0
    drops: int = 0                                             # connections the server closed mid-run
    after_resume: int = 0                                      # accepted, but answered only by a resume
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.accepted) / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def lost(self) -> int:
        # Accepted but not stored as sent, plus sent with neither an answer nor a refusal.
        return (len(self.accepted) - self.stored_as_sent) + self.unanswered


# ---------------------------------------------------------------------------------------------- setup


def prepare(*, battle_counts: list[tuple[str, int, int]]) -> dict[str, list[list]]:
    """Finished battles in bulk. ``battle_counts``: (group name, raters, battles per rater).

    Returns, per group, one list of Battle objects per rater (with ``rater`` loaded).
    """
    from datetime import timedelta

    from django.contrib.auth.models import User
    from django.utils import timezone

    from arena.models import (
        ArenaModel, BackendServer, Battle, BattleStatus, DecodingPreset, Generation, GenerationStatus, HealthStatus,
        Side, Turn,
    )

    preset = DecodingPreset.objects.create(name="bench-votes-preset", temperature=0.7, max_new_tokens=256, seed=1)
    contenders = []
    for label in ("a", "b"):
        server = BackendServer.objects.create(name=f"bench-votes-{label}", kind="tgi",
                                              base_url=f"http://127.0.0.1:9/tgi/bench-{label}",
                                              health_status=HealthStatus.UP)
        contenders.append(ArenaModel.objects.create(display_name=f"Bench voted {label.upper()}", server=server,
                                                    backend_model_id="tgi", preset=preset, enabled=True))
    model_a, model_b = contenders
    now = timezone.now()
    started = now - timedelta(seconds=5)
    groups: dict[str, list[list]] = {}
    for name, raters, per_rater in battle_counts:
        users = make_raters(raters, prefix=f"bench-{name}-")
        battles = Battle.objects.bulk_create(
            [Battle(public_id=uuid.uuid4(), rater=user, model_a=model_a, model_b=model_b, status=BattleStatus.ACTIVE)
             for user in users for _ in range(per_rater)], batch_size=2000)
        turns = Turn.objects.bulk_create([Turn(battle=b, index=1, prompt="Which answer is better?") for b in battles],
                                         batch_size=2000)
        Generation.objects.bulk_create(
            [Generation(turn=t, side=side, contender=contender, status=GenerationStatus.DONE, text=ANSWER,
                        finish_reason="stop", input_tokens=12, output_tokens=96, time_to_first_token_ms=50.0,
                        time_per_output_token_ms=10.0, started_at=started, finished_at=now, attempts=1)
             for t in turns for side, contender in ((Side.A, model_a), (Side.B, model_b))], batch_size=4000)
        by_rater: dict[int, list] = {u.pk: [] for u in users}
        for battle in battles:
            by_rater[battle.rater_id].append(battle)
        groups[name] = [by_rater[u.pk] for u in users]
    say(f"prepared {Battle.objects.count()} finished battles for {User.objects.count()} raters")
    return groups


def stored_votes(battle_pks) -> dict[int, list[str]]:
    from arena.models import Vote

    found: dict[int, list[str]] = {}
    pks = list(battle_pks)
    for start in range(0, len(pks), 5000):
        for battle_id, winner in Vote.objects.filter(battle_id__in=pks[start:start + 5000]).values_list(
                "battle_id", "winner"):
            found.setdefault(battle_id, []).append(winner)
    return found


def tally(outcome: Outcome) -> None:
    stored = stored_votes(outcome.sent)
    outcome.stored = sum(len(v) for v in stored.values())
    outcome.stored_as_sent = sum(1 for pk in outcome.accepted if stored.get(pk) == [outcome.sent[pk]])


# ---------------------------------------------------------------------------------------------- service path


def cast_in_threads(jobs: list[tuple], threads: int, outcome: Outcome) -> None:
    """``jobs``: (battle, winner). Each thread holds its own connection, opened before the clock starts."""
    from django.db import connection

    from arena.services.battles import BattleError, vote_cast

    work: queue.SimpleQueue = queue.SimpleQueue()
    for job in jobs:
        work.put(job)
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)

    def run() -> None:
        connection.ensure_connection()
        start.wait()
        try:
            while True:
                try:
                    battle, winner = work.get_nowait()
                except queue.Empty:
                    return
                t0 = time.perf_counter()
                try:
                    vote_cast(battle=battle, rater=battle.rater, winner=winner)
                    code = None
                except BattleError as exc:
                    code = exc.code
                except Exception as exc:  # recorded; counts as unanswered
                    code = "exception"
                    with lock:
                        outcome.errors.append(f"{type(exc).__name__}: {exc}")
                elapsed_ms = (time.perf_counter() - t0) * 1000.0
                with lock:
                    if code is None:
                        outcome.accepted.add(battle.pk)
                        outcome.latencies_ms.append(elapsed_ms)
                    elif code == "exception":
                        outcome.unanswered += 1
                    else:
                        outcome.refused[code] += 1
        finally:
            connection.close()

    for battle, winner in jobs:
        outcome.sent[battle.pk] = winner
    workers = [threading.Thread(target=run, name=f"vote-{i}", daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    t0 = time.perf_counter()
    for worker in workers:
        worker.join()
    outcome.wall_s = time.perf_counter() - t0


def storm_in_threads(battles: list, size: int) -> tuple[list[int], Counter]:
    """Vote each battle ``size`` times at once from ``size`` threads; returns accepted per battle, refusals."""
    from django.db import connection

    from arena.services.battles import BattleError, vote_cast

    accepted = [0] * len(battles)
    refused: Counter = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(size)

    def run(slot: int) -> None:
        connection.ensure_connection()
        try:
            for i, battle in enumerate(battles):
                barrier.wait()
                try:
                    vote_cast(battle=battle, rater=battle.rater, winner=WINNERS[slot % len(WINNERS)])
                    with lock:
                        accepted[i] += 1
                except BattleError as exc:
                    with lock:
                        refused[exc.code] += 1
                except Exception as exc:
                    with lock:
                        refused[f"exception {type(exc).__name__}"] += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(slot,), daemon=True) for slot in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return accepted, refused


# ---------------------------------------------------------------------------------------------- WebSocket path


async def _frame(ws, timeout_s: float) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout_s))


async def _connect(ws_url: str, origin: str, cookie: str):
    from websockets.asyncio.client import connect

    return await connect(ws_url, origin=origin, additional_headers={"Cookie": cookie}, open_timeout=60,
                         ping_interval=None, max_size=None)


async def ws_voter(ws_url: str, origin: str, cookie: str, battles: list, outcome: Outcome,
                   go: asyncio.Event, connected: list, total: int, all_connected: asyncio.Event,
                   timeout_s: float) -> None:
    """One rater's connection: resume each battle, vote, wait for the reveal.

    Like the battle page, a connection the server drops is reopened after 250 ms and the battle
    resumed: a vote that went through before the drop shows as "voted" in the state frame.
    """
    from websockets.exceptions import ConnectionClosed

    ws = None
    remaining = list(battles)
    counted = False
    drops = 0
    try:
        while remaining:
            try:
                if ws is None:
                    ws = await _connect(ws_url, origin, cookie)
                    if not counted:
                        counted = True
                        connected[0] += 1
                        if connected[0] >= total:
                            all_connected.set()
                        await go.wait()
                battle = remaining[0]
                winner = outcome.sent[battle.pk]
                await ws.send(json.dumps({"type": "resume", "battle": battle.public_id.hex}))
                frame = await _frame(ws, timeout_s)
                if frame.get("type") != "state":
                    raise RuntimeError(f"resume answered {frame}")
                if frame.get("status") == "voted":
                    # Only after a drop: the vote was stored but its answer went down with the connection.
                    outcome.accepted.add(battle.pk)
                    outcome.after_resume += 1
                    remaining.pop(0)
                    continue
                t0 = time.perf_counter()
                await ws.send(json.dumps({"type": "vote", "winner": winner}))
                frame = await _frame(ws, timeout_s)
                elapsed_ms = (time.perf_counter() - t0) * 1000.0
                remaining.pop(0)
                if frame.get("type") == "reveal" and frame.get("winner") == winner:
                    outcome.accepted.add(battle.pk)
                    outcome.latencies_ms.append(elapsed_ms)
                elif frame.get("type") == "error":
                    outcome.refused[frame.get("code") or "error"] += 1
                else:
                    outcome.unanswered += 1
                    outcome.errors.append(f"vote answered {frame}")
            except ConnectionClosed:
                drops += 1
                outcome.drops += 1
                ws = None
                if drops > 200:
                    raise
                await asyncio.sleep(0.25)
    except Exception as exc:  # recorded; what was not answered counts as unanswered
        outcome.errors.append(f"{type(exc).__name__}: {exc!r}")
        outcome.unanswered += len(remaining)
    finally:
        if not counted:
            connected[0] += 1
            if connected[0] >= total:
                all_connected.set()
        if ws is not None:
            await ws.close()


async def cast_over_websockets(web_url: str, cookie_name: str, cookies: list[str], battles_by_rater: list[list],
                               outcome: Outcome, timeout_s: float) -> None:
    ws_url = web_url.replace("http://", "ws://", 1) + "/ws/battle/"
    go, all_connected, connected = asyncio.Event(), asyncio.Event(), [0]
    for battles in battles_by_rater:
        for i, battle in enumerate(battles):
            outcome.sent[battle.pk] = WINNERS[(battle.pk + i) % len(WINNERS)]
    tasks = [asyncio.create_task(ws_voter(ws_url, web_url, f"{cookie_name}={cookie}", battles, outcome, go,
                                          connected, len(cookies), all_connected, timeout_s))
             for cookie, battles in zip(cookies, battles_by_rater)]
    await asyncio.wait_for(all_connected.wait(), 120)
    t0 = time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    outcome.wall_s = time.perf_counter() - t0


async def storm_over_websockets(web_url: str, cookie_name: str, cookie: str, battles: list, size: int,
                                timeout_s: float) -> tuple[list[int], Counter]:
    """``size`` connections of the same rater (browser tabs) resume one battle and all vote at once."""
    ws_url = web_url.replace("http://", "ws://", 1) + "/ws/battle/"
    accepted = [0] * len(battles)
    refused: Counter = Counter()
    for i, battle in enumerate(battles):
        # Fresh connections for every battle, so none of them idles long enough to be dropped.
        sockets = await asyncio.gather(*(_connect(ws_url, web_url, f"{cookie_name}={cookie}") for _ in range(size)))
        try:
            for ws in sockets:
                await ws.send(json.dumps({"type": "resume", "battle": battle.public_id.hex}))
            for ws in sockets:
                frame = await _frame(ws, timeout_s)
                if frame.get("type") != "state":
                    raise RuntimeError(f"resume answered {frame}")
            await asyncio.gather(*(ws.send(json.dumps({"type": "vote", "winner": WINNERS[slot % len(WINNERS)]}))
                                   for slot, ws in enumerate(sockets)))
            for ws in sockets:
                frame = await _frame(ws, timeout_s)
                if frame.get("type") == "reveal":
                    accepted[i] += 1
                else:
                    refused[frame.get("code") or str(frame.get("type"))] += 1
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets))
    return accepted, refused


# ---------------------------------------------------------------------------------------------- output


def storm_line(label: str, battles: list, accepted: list[int], refused: Counter, size: int) -> tuple[str, bool]:
    stored = stored_votes(b.pk for b in battles)
    exactly_one = sum(1 for b in battles if len(stored.get(b.pk, [])) == 1)
    accepted_once = sum(1 for n in accepted if n == 1)
    ok = exactly_one == len(battles) and accepted_once == len(battles) and sum(refused.values()) == (size - 1) * len(
        battles)
    refusals = ", ".join(f"{code} {count}" for code, count in sorted(refused.items())) or "none"
    return (f"  {label:<22} {len(battles)} battles x {size} votes: accepted exactly once {accepted_once}/{len(battles)},"
            f" refused: {refusals}; stored exactly one vote {exactly_one}/{len(battles)} -> "
            f"{'OK' if ok else 'FAIL'}"), ok


def report(outcomes: list[Outcome], storms: list[tuple[str, bool]], storm_size: int, with_worker: bool,
           load_before: float, read_timeouts: int) -> None:
    print("Votes on PostgreSQL through the real path (vote_cast: row lock, checks, insert, status update, "
          f"Elo drain asked for on Redis{'; a Celery worker drains' if with_worker else ''}); loopback.")
    print(f"Host: {os.cpu_count()} CPUs, load average {load_before:.1f} when the votes started "
          "(other work on the host counts against every process here).")
    print()
    header = (f"{'path':<30}{'parallel':>10}{'votes/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
              f"{'sent':>7}{'accepted':>9}{'refused':>8}{'stored':>8}{'lost':>6}")
    print(header)
    print("-" * len(header))
    for o in outcomes:
        print(f"{o.label:<30}{o.parallelism:>10}{o.rate:>9.0f}{percentile(o.latencies_ms, 0.5):>8.1f}"
              f"{percentile(o.latencies_ms, 0.99):>8.1f}{max(o.latencies_ms, default=float('nan')):>8.1f}"
              f"{len(o.sent):>7}{len(o.accepted):>9}{sum(o.refused.values()):>8}{o.stored:>8}{o.lost:>6}")
    print("latency: vote_cast call / WebSocket vote frame -> reveal frame; votes/s: accepted votes over the "
          "phase's wall time (WebSocket: each vote follows a resume of its battle on the same connection).")
    if read_timeouts:
        print(f"uvicorn log: {read_timeouts} consumers died of a Redis read timeout (the channel layer's 5 s "
              "blocking pop outlives redis-py's default 5 s socket timeout)")
    for o in outcomes:
        if o.drops or o.after_resume:
            print(f"{o.label}: the server closed {o.drops} connections mid-run; the clients reopened them and "
                  f"resumed (as the battle page does); {o.after_resume} votes were confirmed only by the resume")
    verdicts = []
    for o in outcomes:
        met = o.rate >= GOAL_VOTES_PER_SECOND and o.lost == 0
        verdicts.append(f"{o.label.split(',')[0]}: {'met' if met else 'MISSED'} ({o.rate:.0f} votes/s, {o.lost} lost)")
    print(f"Goal: >= {GOAL_VOTES_PER_SECOND:.0f} votes/s, zero lost. " + "; ".join(verdicts))
    for o in outcomes:
        for code, count in sorted(o.refused.items()):
            print(f"  ! {o.label}: {count} refused with {code}")
        for error in o.errors[:5]:
            print(f"  ! {o.label}: {error}")
    print()
    print(f"Double-vote storm ({storm_size} concurrent votes on the same battle; exactly one may be stored):")
    for line, _ok in storms:
        print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--votes", type=int, default=4000, help="votes cast through vote_cast from threads")
    parser.add_argument("--threads", type=int, default=16, help="threads casting votes (one connection each)")
    parser.add_argument("--ws-votes", type=int, default=1000, help="votes cast over WebSockets (0: skip)")
    parser.add_argument("--ws-connections", type=int, default=50, help="concurrent WebSocket raters")
    parser.add_argument("--storm-battles", type=int, default=20, help="battles in each double-vote storm")
    parser.add_argument("--storm-size", type=int, default=10, help="concurrent votes on each storm battle")
    parser.add_argument("--with-worker", action="store_true",
                        help="also run a Celery worker that runs the Elo drains the votes ask for")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="longest wait for any one answer")
    parser.add_argument("--db-conn-max-age", type=int, default=None, metavar="SECONDS",
                        help="DB_CONN_MAX_AGE for this process and the web process (above 0: persistent connections instead "
                             "of the pool docker/env.example sets); unset keeps production's settings")
    args = parser.parse_args()
    if args.votes < 1 or args.threads < 1 or args.ws_votes < 0 or args.ws_connections < 1 or args.storm_size < 2:
        parser.error("--votes, --threads and --ws-connections must be at least 1, --storm-size at least 2")

    service_raters = -(-args.votes // VOTES_PER_RATER)
    service_raters = max(service_raters, min(args.votes, args.threads * 4))
    per_service_rater = -(-args.votes // service_raters)
    ws_per_conn = -(-args.ws_votes // args.ws_connections) if args.ws_votes else 0
    if ws_per_conn > VOTES_PER_RATER:
        parser.error(f"--ws-votes / --ws-connections must be at most {VOTES_PER_RATER} (the daily vote cap)")
    ws_storm = min(args.storm_battles, VOTES_PER_RATER)

    def bench() -> int:
        with Stack(prefix="arena-bench-votes-") as stack:
            stack.start_services(**({} if args.db_conn_max_age is None
                                     else {"DB_CONN_MAX_AGE": str(args.db_conn_max_age)}))
            from django.conf import settings

            plan = [("svc", service_raters, per_service_rater), ("storm", 1, args.storm_battles)]
            if args.ws_votes:
                plan += [("ws", args.ws_connections, ws_per_conn), ("wsstorm", 1, ws_storm)]
            groups = prepare(battle_counts=plan)
            web_url = cookies = None
            if args.ws_votes:
                from django.contrib.auth.models import User

                cookies = [session_cookie_for(User.objects.get(pk=battles[0].rater_id)) for battles in groups["ws"]]
                storm_cookie = session_cookie_for(User.objects.get(pk=groups["wsstorm"][0][0].rater_id))
                web_url = stack.start_uvicorn()
            if args.with_worker:
                stack.start_celery(concurrency=8)

            # Interleave raters so concurrent votes come from different raters, as in real use.
            svc_battles = [b for i in range(per_service_rater) for r in groups["svc"] if i < len(r) for b in [r[i]]]
            svc_battles = svc_battles[:args.votes]
            jobs = [(battle, WINNERS[i % len(WINNERS)]) for i, battle in enumerate(svc_battles)]
            load_before = os.getloadavg()[0]
            service = Outcome(label="vote_cast, thread pool", parallelism=f"{args.threads} thr")
            say(f"service path: {len(jobs)} votes from {args.threads} threads")
            cast_in_threads(jobs, args.threads, service)
            tally(service)
            outcomes = [service]

            if args.ws_votes:
                by_rater = [r for r in groups["ws"]]
                extra = sum(len(r) for r in by_rater) - args.ws_votes
                for r in by_rater[:max(0, extra)]:
                    r.pop()  # exactly --ws-votes battles
                ws = Outcome(label="WebSocket to uvicorn, end to end", parallelism=f"{args.ws_connections} ws")
                say(f"WebSocket path: {args.ws_votes} votes over {args.ws_connections} connections")
                asyncio.run(cast_over_websockets(web_url, settings.SESSION_COOKIE_NAME, cookies, by_rater, ws,
                                                 args.timeout_s))
                tally(ws)
                outcomes.append(ws)

            say("double-vote storms")
            storm_battles = groups["storm"][0]
            accepted, refused = storm_in_threads(storm_battles, args.storm_size)
            storms = [storm_line("vote_cast, threads:", storm_battles, accepted, refused, args.storm_size)]
            if args.ws_votes:
                ws_battles = groups["wsstorm"][0]
                accepted, refused = asyncio.run(storm_over_websockets(
                    web_url, settings.SESSION_COOKIE_NAME, storm_cookie, ws_battles, args.storm_size, args.timeout_s))
                storms.append(storm_line("WebSocket, same rater:", ws_battles, accepted, refused, args.storm_size))

            dead = stack.check_children()
            if dead:
                raise StackError(f"a process died during the run: {', '.join(dead)}")
            report(outcomes, storms, args.storm_size, args.with_worker, load_before,
                   stack.log_count("uvicorn", "redis.exceptions.TimeoutError") if args.ws_votes else 0)
            failed = any(o.lost or o.unanswered or o.refused for o in outcomes) or not all(ok for _line, ok in storms)
            if failed:
                stack.failed = True
                return 1
            return 0

    return exit_status(bench)


if __name__ == "__main__":
    sys.exit(main())
