"""The production topology on loopback, for benchmarks: throwaway PostgreSQL and Redis (the same
classes the test runner uses), migrations, and real child processes: the backend emulator, uvicorn
serving ``arena.asgi:application`` and a Celery worker on the thread pool.

    with Stack(prefix="arena-bench-") as stack:
        stack.start_services()            # PostgreSQL + Redis, environment, django.setup(), migrate
        emulator_url = stack.start_emulator([EmulatedModel(...)])
        web_url = stack.start_uvicorn()
        stack.start_celery(concurrency=128)
        ...

Every process started here is stopped on exit, also on Ctrl-C, SIGTERM or an exception. Child
processes run in their own session so a Ctrl-C reaches only this script, which then stops them in
order (web and worker first, then the emulator, Redis and PostgreSQL). Logs go to a temporary
directory that is removed on success and kept (without the database files) on failure.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.run import Postgres, Redis, free_port  # noqa: E402

SECRET_KEY = "bench-only-secret"


class StackError(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def exit_status(run) -> int:
    """Run a benchmark body (returns 0 or 1) with the exit statuses every topology bench uses:
    130 on Ctrl-C or SIGTERM (after its processes were stopped), 2 if the stack could not start."""
    try:
        return run()
    except KeyboardInterrupt:
        say("interrupted; every process started was stopped")
        return 130
    except StackError as exc:
        say(f"ERROR: {exc}")
        return 2


def _raise_interrupt(signum, frame):  # SIGTERM/SIGHUP behave like Ctrl-C: unwind and clean up
    raise KeyboardInterrupt(f"signal {signum}")


def _die_with_parent() -> None:
    """In the child: get SIGTERM if this script dies without cleaning up (SIGKILL), on Linux."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def wait_for_port(port: int, *, proc: subprocess.Popen | None, what: str, log: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what} exited early (code {proc.returncode}):\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise StackError(f"{what} did not open 127.0.0.1:{port} within {timeout_s:.0f} s:\n{tail(log)}")


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def production_database_env() -> dict[str, str]:
    """The DB_* variables docker/env.example sets (not its commented defaults): what production runs."""
    found = {}
    for line in (ROOT / "docker" / "env.example").read_text().splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name.startswith("DB_") and not name.startswith("#"):
            found[name] = value
    return found


class Stack:
    def __init__(self, *, prefix: str = "arena-bench-") -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=prefix))
        os.chmod(self.workdir, 0o755)
        self.postgres = Postgres(self.workdir / "pg")
        self.redis = Redis(self.workdir / "redis")
        self.children: list[tuple[str, subprocess.Popen, object]] = []
        self.env: dict[str, str] = {}
        self.failed = False
        self._previous_handlers: dict[int, object] = {}

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Stack:
        # Our own handler for SIGINT too: asyncio.run then leaves it alone, so Ctrl-C during a client
        # round unwinds at once instead of being turned into task cancellations.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._previous_handlers[sig] = signal.signal(sig, _raise_interrupt)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.failed = True
        self.close()
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)

    def close(self) -> None:
        # Web and worker first (they hold connections to the rest), then the emulator.
        for name, proc, log in reversed(self.children):
            self._stop_child(name, proc)
            log.close()
        self.children.clear()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:
            pass
        self.redis.stop()
        if not self.postgres.started and (self.postgres.datadir / "postmaster.pid").exists():
            self.postgres.started = hasattr(self.postgres, "pg_ctl")  # interrupted while it was starting
        self.postgres.stop()
        if self.failed:
            shutil.rmtree(self.workdir / "pg" / "pgdata", ignore_errors=True)
            say(f"logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @staticmethod
    def _stop_child(name: str, proc: subprocess.Popen) -> None:
        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            say(f"{name} (pid {proc.pid}) did not stop on SIGTERM; killing it")
            proc.kill()
            proc.wait(timeout=10)

    # ------------------------------------------------------------------ services

    def start_services(self, **extra_env: str) -> None:
        """PostgreSQL and Redis, the environment every process shares, Django in this process, migrate.

        The database settings are production's: those docker/env.example sets (the connection pool),
        unless ``extra_env`` says otherwise.
        """
        database_url = self.postgres.start()
        redis_url = self.redis.start()
        if not database_url or not redis_url:
            raise StackError("PostgreSQL and Redis are both required (see the warnings above)")
        self.env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SECRET_KEY": SECRET_KEY,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
            "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "arena.settings",
            **production_database_env(),
            **extra_env,
        }
        os.environ.update(self.env)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        say("migrated")

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def spawn(self, name: str, cmd: list[str]) -> tuple[subprocess.Popen, Path]:
        log_path = self.workdir / f"{name}.log"
        log = open(log_path, "w")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self._child_env(), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
        self.children.append((name, proc, log))
        return proc, log_path

    def start_emulator(self, models) -> str:
        """The backend emulator in its own process (its own interpreter, as a GPU host would be)."""
        config = self.workdir / "emulator-models.json"
        config.write_text(json.dumps([m.as_dict() for m in models]))
        port = free_port()
        proc, log = self.spawn("emulator", [sys.executable, "manage.py", "run_emulator", "--host", "127.0.0.1",
                                            "--port", str(port), "--config", str(config)])
        wait_for_port(port, proc=proc, what="the emulator", log=log)
        say(f"emulator on 127.0.0.1:{port}")
        return f"http://127.0.0.1:{port}"

    def start_uvicorn(self) -> str:
        import httpx

        port = free_port()
        proc, log = self.spawn("uvicorn", [sys.executable, "-m", "uvicorn", "arena.asgi:application",
                                           "--host", "127.0.0.1", "--port", str(port), "--ws", "websockets",
                                           "--log-level", "warning", "--no-access-log"])
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise StackError(f"uvicorn exited early (code {proc.returncode}):\n{tail(log)}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise StackError(f"uvicorn did not answer /healthz within 30 s:\n{tail(log)}")
            time.sleep(0.1)
        say(f"uvicorn on {base}")
        return base

    def start_celery(self, *, concurrency: int = 128, name: str = "celery") -> None:
        """A Celery worker on the thread pool; ``name`` (its log and CPU line) tells several apart."""
        proc, log = self.spawn(name, [sys.executable, "-m", "celery", "-A", "workers", "worker", "--pool", "threads",
                                      "--concurrency", str(concurrency), "--loglevel", "INFO",
                                      "--without-gossip", "--without-mingle", "--without-heartbeat",
                                      "-n", f"bench-{name}-{os.getpid()}@%h", "-Q", "celery,ratings"])
        deadline = time.monotonic() + 60
        while "ready." not in tail(log, 100_000):
            if proc.poll() is not None:
                raise StackError(f"the celery worker exited early (code {proc.returncode}):\n{tail(log)}")
            if time.monotonic() > deadline:
                raise StackError(f"the celery worker did not become ready within 60 s:\n{tail(log)}")
            time.sleep(0.1)
        say(f"celery worker ready (threads, concurrency {concurrency})")

    def log_count(self, name: str, needle: str) -> int:
        """How many lines of child ``name``'s log contain ``needle``."""
        path = self.workdir / f"{name}.log"
        try:
            with open(path, errors="replace") as fh:
                return sum(1 for line in fh if needle in line)
        except OSError:
            return 0

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by each process started here; PostgreSQL sums its backends."""
        tick = os.sysconf("SC_CLK_TCK")

        def stat(pid: int) -> list[str] | None:
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    return fh.read().rsplit(")", 1)[1].split()
            except OSError:
                return None

        def used(fields: list[str]) -> float:
            return (int(fields[11]) + int(fields[12])) / tick  # utime, stime

        result = {name: used(fields) for name, proc, _ in self.children if (fields := stat(proc.pid))}
        if self.redis.proc and (fields := stat(self.redis.proc.pid)):
            result["redis"] = used(fields)
        try:
            postmaster = int((self.postgres.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return result
        total = 0.0
        for entry in os.listdir("/proc"):
            if entry.isdigit() and (fields := stat(int(entry))) and (int(entry) == postmaster
                                                                      or int(fields[1]) == postmaster):
                total += used(fields)
                if int(entry) == postmaster:  # backends that already exited: reaped into cutime, cstime
                    total += (int(fields[13]) + int(fields[14])) / tick
        result["postgres"] = total
        return result

    def check_children(self) -> list[str]:
        """Names of child processes that died unexpectedly."""
        return [f"{name} (exit {proc.returncode})" for name, proc, _ in self.children if proc.poll() is not None]


# ---------------------------------------------------------------------- shared helpers for benches

def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def make_raters(count: int, *, prefix: str) -> list:
    """``count`` users in the rater group, created in bulk (no password: they never log in by form)."""
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group, User

    from arena import roles

    group, _ = Group.objects.get_or_create(name=roles.RATER)
    unusable = make_password(None)
    users = User.objects.bulk_create([User(username=f"{prefix}{i:05d}", password=unusable) for i in range(count)])
    users = list(User.objects.filter(username__startswith=prefix).order_by("username"))
    group.user_set.through.objects.bulk_create(
        [group.user_set.through(user_id=u.pk, group_id=group.pk) for u in users])
    return users


def session_cookie_for(user) -> str:
    """A logged-in session for ``user``, as django.contrib.auth.login would store it; returns its key."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    assert settings.SESSION_ENGINE == "django.contrib.sessions.backends.db"
    session = SessionStore()
    session[SESSION_KEY] = user._meta.pk.value_to_string(user)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return session.session_key
