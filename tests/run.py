"""Run the whole test suite against throwaway real services.

Starts a PostgreSQL cluster (initdb/pg_ctl in a temporary directory) and a Redis server on free
ports, exports DATABASE_URL / REDIS_URL / CHROMIUM_PATH, runs pytest with any arguments given,
then stops both. Under CI=true a missing service is an error; elsewhere it is reported loudly and
the tests that need it are skipped (and listed at the end).

Usage: python -m tests.run [pytest args...]
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"


def say(message: str) -> None:
    print(f"[tests] {message}", flush=True)


def missing(what: str, why: str) -> None:
    line = f"{what} is not available: {why}"
    if IN_CI:
        say(f"ERROR: {line} (CI=true requires it)")
        sys.exit(2)
    say("!" * 70)
    say(f"WARNING: {line}; tests that need it will be SKIPPED")
    say("!" * 70)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def as_postgres_user(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; drop to an unprivileged account when we are root.
    if os.geteuid() != 0:
        return cmd
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["runuser", "-u", user, "--", *cmd]
    raise RuntimeError("running as root and no unprivileged user (postgres/nobody) exists")


class Postgres:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.datadir = workdir / "pgdata"
        self.port = free_port()
        self.started = False

    def start(self) -> str | None:
        initdb, pg_ctl = find_pg_bin("initdb"), find_pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            missing("PostgreSQL", "initdb/pg_ctl not found (install the postgresql package)")
            return None
        self.pg_ctl = pg_ctl
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = "postgres" if _user_exists("postgres") else "nobody"
            shutil.chown(self.workdir, user=user)
        subprocess.run(
            as_postgres_user([initdb, "-D", str(self.datadir), "-U", "arena", "--auth=trust",
                              "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]),
            check=True, stdout=subprocess.DEVNULL,
        )
        options = (f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        subprocess.run(
            as_postgres_user([pg_ctl, "-D", str(self.datadir), "-l", str(self.workdir / "postgres.log"),
                              "-o", options, "-w", "start"]),
            check=True, stdout=subprocess.DEVNULL,
        )
        self.started = True
        say(f"PostgreSQL on 127.0.0.1:{self.port}")
        return f"postgres://arena@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        if self.started:
            subprocess.run(as_postgres_user([self.pg_ctl, "-D", str(self.datadir), "-m", "immediate", "stop"]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


class Redis:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> str | None:
        binary = shutil.which("redis-server")
        if not binary:
            missing("Redis", "redis-server not found (install the redis-server package)")
            return None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=open(self.workdir / "redis.log", "w"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    say(f"Redis on 127.0.0.1:{self.port}")
                    return f"redis://127.0.0.1:{self.port}/0"
            except OSError:
                time.sleep(0.05)
        missing("Redis", "redis-server did not start")
        return None

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def main(argv: list[str]) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="arena-tests-"))
    os.chmod(workdir, 0o755)
    postgres, redis = Postgres(workdir / "pg"), Redis(workdir / "redis")
    env = dict(os.environ)
    env.setdefault("SECRET_KEY", "test-only-secret")
    env["TEST_LOG_DIR"] = str(workdir)
    try:
        database_url = postgres.start()
        redis_url = redis.start()
        if database_url:
            env["DATABASE_URL"] = database_url
        if redis_url:
            env["REDIS_URL"] = redis_url
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        if Path(chromium).exists():
            env["CHROMIUM_PATH"] = chromium
        else:
            missing("Chromium", "/usr/bin/chromium not found (install the chromium package)")
        cmd = [sys.executable, "-m", "pytest", *argv]
        say("running: " + " ".join(cmd))
        return subprocess.call(cmd, cwd=REPO_ROOT, env=env)
    finally:
        redis.stop()
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
