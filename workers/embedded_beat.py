"""The periodic tasks, run inside the web process in the embedded default (which has no beat).

Reads the same ``CELERY_BEAT_SCHEDULE`` as ``celery beat`` and starts each due task through
``workers.dispatch.enqueue``, so health checks, the deadline sweeper and the leaderboard refresh
run the very same task code as in production.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def interval_of(entry: dict) -> float:
    schedule = entry["schedule"]
    seconds = schedule.total_seconds() if hasattr(schedule, "total_seconds") else float(schedule)
    if seconds <= 0:
        raise ValueError(f"task {entry['task']!r}: a periodic interval must be positive, not {seconds}")
    return seconds


def due_entries(schedule: dict[str, dict], last_run: dict[str, float], now: float) -> list[str]:
    """Names of the entries due at ``now``; an entry never run is due at once."""
    return [name for name, entry in schedule.items()
            if name not in last_run or now - last_run[name] >= interval_of(entry)]


class EmbeddedBeat:
    def __init__(self, schedule: dict[str, dict], *, tick_s: float = 1.0,
                 start_task: Callable[[str], None] | None = None) -> None:
        for entry in schedule.values():
            interval_of(entry)  # refuse a bad schedule before starting
        self.schedule = schedule
        self.tick_s = tick_s
        self._start_task = start_task or _enqueue_by_name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="embedded-beat", daemon=True)
        self.last_run: dict[str, float] = {}

    def start(self) -> "EmbeddedBeat":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for name in due_entries(self.schedule, self.last_run, now):
                self.last_run[name] = now
                try:
                    self._start_task(self.schedule[name]["task"])
                except Exception:
                    log.exception("embedded beat could not start %s", name)
            self._stop.wait(self.tick_s)


def _enqueue_by_name(task_name: str) -> None:
    import leaderboard.tasks  # noqa: F401 (registers its tasks)
    import workers.tasks  # noqa: F401
    from workers.celery import app
    from workers.dispatch import enqueue

    enqueue(app.tasks[task_name])
