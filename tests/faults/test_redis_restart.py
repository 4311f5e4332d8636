"""Redis (broker, channel layer, partial text) restarted during battles, with real web and worker processes.

Votes acknowledged before the restart stay in PostgreSQL, nothing is left streaming past its
deadline, and once Redis is back a new battle runs to its vote.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from arena.models import Battle, BattleStatus, Generation, GenerationStatus, Vote
from tests.faults.conftest import BrowserSocket, Process, last_is, session_cookie, start_web, start_worker
from tests.fixtures.services import subprocess_env
from tests.run import Redis
from workers.tasks import expire_generations

pytestmark = pytest.mark.django_db(transaction=True)

DEADLINE_S = 3.0


@pytest.fixture
def own_redis(tmp_path: Path, require_postgres, require_redis):
    server = Redis(tmp_path / "redis")
    url = server.start()
    if url is None:
        pytest.fail("could not start a redis-server for this test")
    yield server, url
    server.stop()


def sweep_through(url: str) -> None:
    """Send the periodic sweep on this broker, as beat would."""
    from workers.celery import app

    with app.connection_for_write(url) as connection:
        expire_generations.apply_async(connection=connection)


def recovered(worker: Process, env: dict[str, str]) -> Process:
    """The worker after the broker came back: reconnected, or restarted as its supervisor would.

    Compose runs workers with ``restart: unless-stopped``; kombu's Redis transport can end the
    worker process on a lost broker connection while it holds unacknowledged messages.
    """
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            worker.stop()
            return start_worker(env, "redis-restart-again")
        if worker.log().count("Connected to redis://") >= 2:
            return worker
        time.sleep(0.2)
    raise AssertionError(f"the worker neither reconnected nor exited:\n{worker.log()[-3000:]}")


def opened(base: str, cookie: str, frame: dict, expect: tuple[str, ...], attempts: int = 6):
    """Open a socket and send the first frame, reconnecting as battle.js does when the socket drops."""
    for attempt in range(1, attempts + 1):
        ws = BrowserSocket(base, cookie)
        try:
            ws.send(frame)
            return ws, ws.until(last_is(*expect))[-1]
        except ConnectionClosed:
            ws.close()
            time.sleep(0.25 * attempt)
    raise AssertionError(f"no working socket after {attempts} attempts")


def play_battle(base: str, cookie: str, prompt: str) -> tuple[str, list[dict]]:
    ws, state = opened(base, cookie, {"type": "new"}, ("state", "error"))
    try:
        assert state["type"] == "state", state
        ws.send({"type": "prompt", "text": prompt})
        frames = ws.until(last_is("ready", "failed", "error"), timeout=30)
        assert frames[-1]["type"] == "ready", frames[-1]
        ws.send({"type": "vote", "winner": "model_a"})
        frames += ws.until(last_is("reveal", "error"))
        assert frames[-1]["type"] == "reveal", frames[-1]
        return state["battle"], frames
    finally:
        ws.close()


def test_redis_restart_mid_stream_loses_no_vote_and_leaves_nothing_streaming(own_redis, contender_on, rater):
    server, url = own_redis
    contender_on("demo-coder-34b", "ollama", deadline_s=DEADLINE_S)
    contender_on("demo-markdown-13b", "openai", deadline_s=DEADLINE_S)
    env = subprocess_env(REDIS_URL=url)
    web, base = start_web(env)
    worker = start_worker(env, "redis-restart")
    cookie = session_cookie(rater)
    try:
        voted_before, _ = play_battle(base, cookie, "Tell me about tea.")

        ws = BrowserSocket(base, cookie)
        ws.send({"type": "new"})
        interrupted = ws.until(last_is("state"))[-1]["battle"]
        ws.send({"type": "prompt", "text": "Write a long story."})
        ws.until(lambda f: any(x["type"] == "delta" for x in f))
        server.stop()  # mid-stream: broker, channel layer and partial text all go away
        time.sleep(0.5)
        assert server.start() == url
        try:
            ws.close()
        except ConnectionClosed:
            pass
        worker = recovered(worker, env)

        # Past the deadline a sweep through the restarted broker ends whatever is still open.
        time.sleep(DEADLINE_S + 0.5)
        sweep_through(url)
        deadline = time.monotonic() + 15
        while Generation.objects.filter(status__in=[GenerationStatus.QUEUED, GenerationStatus.STREAMING]).exists():
            assert time.monotonic() < deadline, (list(Generation.objects.values("side", "status")),
                                                 worker.log()[-4000:])
            time.sleep(0.2)

        # The rater comes back to the interrupted battle: it is settled, one way or the other.
        ws, state = opened(base, cookie, {"type": "resume", "battle": interrupted}, ("state", "error"))
        ws.close()
        assert state["type"] == "state"
        assert {state["turns"][0][s]["status"] for s in "ab"} <= {"done", "failed"}
        assert state["status"] in (BattleStatus.ACTIVE, BattleStatus.FAILED)

        voted_after, _ = play_battle(base, cookie, "And coffee?")
    finally:
        worker.stop()
        web.stop()

    for public_id in (voted_before, voted_after):
        battle = Battle.objects.get(public_id=public_id)
        assert battle.status == BattleStatus.VOTED
        assert Vote.objects.filter(battle=battle, winner="model_a").count() == 1
