"""PostgreSQL restarted under a running web and worker process (a throwaway cluster of our own).

Votes acknowledged before the restart are there after it; a vote while it is down gets a clear
error frame and writes nothing; once it is back the same battle can be voted and a new one runs.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from websockets.exceptions import ConnectionClosed

from tests.faults.conftest import BrowserSocket, last_is, session_cookie, start_web, start_worker
from tests.fixtures.services import subprocess_env
from tests.run import Postgres, as_postgres_user, find_pg_bin

pytestmark = pytest.mark.django_db(transaction=True)


class RestartablePostgres(Postgres):
    def options(self) -> str:
        return (f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100")

    def halt(self) -> None:
        subprocess.run(as_postgres_user([self.pg_ctl, "-D", str(self.datadir), "-m", "fast", "-w", "stop"]),
                       check=True, stdout=subprocess.DEVNULL)

    def resume(self) -> None:
        subprocess.run(as_postgres_user([self.pg_ctl, "-D", str(self.datadir), "-l",
                                         str(self.workdir / "postgres.log"), "-o", self.options(), "-w", "start"]),
                       check=True, stdout=subprocess.DEVNULL)


@pytest.fixture
def own_postgres(require_postgres, require_redis):
    # Not under pytest's tmp_path: its parents are private to root, and the cluster runs as postgres.
    top = Path(tempfile.mkdtemp(prefix="arena-faults-pg-"))
    os.chmod(top, 0o755)
    server = RestartablePostgres(top / "pg")
    url = server.start()
    if url is None:
        pytest.fail("could not start a PostgreSQL cluster for this test")
    try:
        yield server, url
    finally:
        server.stop()
        shutil.rmtree(top, ignore_errors=True)


def copy_test_database(url: str) -> None:
    """Everything the test wrote so far (schema, users, sessions, contenders) into our own cluster."""
    source = connection.settings_dict
    dump = subprocess.run([find_pg_bin("pg_dump"), "-h", source["HOST"], "-p", str(source["PORT"]), "-U",
                           source["USER"], "--no-owner", source["NAME"]], check=True, capture_output=True).stdout
    subprocess.run([find_pg_bin("psql"), "-q", "-v", "ON_ERROR_STOP=1", url], input=dump, check=True,
                   capture_output=True)


def query(url: str, sql: str, *args):
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


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


def battle_until_ready(base: str, cookie: str, prompt: str):
    ws, state = opened(base, cookie, {"type": "new"}, ("state", "error"))
    assert state["type"] == "state", state
    ws.send({"type": "prompt", "text": prompt})
    frames = ws.until(last_is("ready", "failed", "error"), timeout=30)
    assert frames[-1]["type"] == "ready", frames[-1]
    return ws, state["battle"]


def vote(ws, winner: str = "model_b") -> dict:
    ws.send({"type": "vote", "winner": winner})
    return ws.until(last_is("reveal", "error"))[-1]


def votes_of(url: str, public_id: str) -> list[tuple]:
    return query(url, "SELECT v.winner, b.status FROM arena_vote v JOIN arena_battle b ON b.id = v.battle_id "
                      "WHERE b.public_id = %s", public_id)


def test_postgres_restart_keeps_acknowledged_votes_and_refuses_votes_while_down(own_postgres, contender_on,
                                                                                 rater):
    server, url = own_postgres
    contender_on("test-quick-1b", "ollama")
    contender_on("demo-terse-7b", "openai")
    cookie = session_cookie(rater)
    copy_test_database(url)
    env = subprocess_env(DATABASE_URL=url)
    web, base = start_web(env)
    worker = start_worker(env, "pg-restart")
    try:
        ws, acknowledged = battle_until_ready(base, cookie, "Tell me about tea.")
        assert vote(ws)["type"] == "reveal"
        ws.close()

        ws, pending = battle_until_ready(base, cookie, "And coffee?")
        server.halt()
        try:
            reply = vote(ws)
        except ConnectionClosed:
            reply = None  # the consumer died instead of answering
        server.resume()
        try:
            ws.close()
        except ConnectionClosed:
            pass

        # Nothing half-written: the battle that could not be voted has no vote and is still open.
        status = query(url, "SELECT status, revealed_at FROM arena_battle WHERE public_id = %s", pending)
        assert status == [("active", None)]
        assert query(url, "SELECT count(*) FROM arena_vote v JOIN arena_battle b ON b.id = v.battle_id "
                          "WHERE b.public_id = %s", pending) == [(0,)]

        # Back up: the same battle can be voted now, and a new battle runs to its vote.
        ws, state = opened(base, cookie, {"type": "resume", "battle": pending}, ("state", "error"))
        assert state["type"] == "state" and state["can_vote"], state
        assert vote(ws)["type"] == "reveal"
        ws.close()
        ws, fresh = battle_until_ready(base, cookie, "And cocoa?")
        assert vote(ws, "tie")["type"] == "reveal"
        ws.close()
    finally:
        worker.stop()
        web.stop()

    assert votes_of(url, acknowledged) == [("model_b", "voted")]
    assert votes_of(url, pending) == [("model_b", "voted")]
    assert votes_of(url, fresh) == [("tie", "voted")]
    # Last, so that everything above is checked either way: the rater was told, the socket survived.
    assert reply is not None, "the vote while PostgreSQL was down closed the socket without an error frame"
    assert reply["type"] == "error" and reply.get("message"), reply
