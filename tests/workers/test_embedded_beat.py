"""The embedded default's in-process beat: the same schedule and task code as celery beat."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from arena.models import BackendServer, HealthStatus
from workers.embedded_beat import EmbeddedBeat, due_entries


def test_due_entries_follow_each_interval():
    schedule = {"fast": {"task": "t.fast", "schedule": 10.0}, "slow": {"task": "t.slow", "schedule": timedelta(minutes=1)}}
    assert due_entries(schedule, {}, now=100.0) == ["fast", "slow"]  # never run: due at once
    last = {"fast": 100.0, "slow": 100.0}
    assert due_entries(schedule, last, now=109.9) == []
    assert due_entries(schedule, last, now=110.0) == ["fast"]
    assert due_entries(schedule, last, now=160.0) == ["fast", "slow"]


def test_a_bad_interval_is_refused_before_starting():
    with pytest.raises(ValueError, match="must be positive"):
        EmbeddedBeat({"bad": {"task": "t.bad", "schedule": 0}})


def test_the_beat_starts_tasks_at_their_intervals():
    started: list[str] = []
    lock = threading.Lock()

    def record(name):
        with lock:
            started.append(name)

    began = time.monotonic()
    beat = EmbeddedBeat({"often": {"task": "t.often", "schedule": 0.1}, "rare": {"task": "t.rare", "schedule": 60}},
                        tick_s=0.02, start_task=record).start()
    while started.count("t.often") < 4 and time.monotonic() - began < 10:
        time.sleep(0.01)
    elapsed = time.monotonic() - began
    beat.stop()
    assert started.count("t.often") >= 4
    assert elapsed >= 0.3  # four runs are three intervals apart at the least
    assert started.count("t.rare") == 1


@pytest.mark.django_db(transaction=True)
def test_the_project_schedule_runs_the_real_health_check_in_process(settings, emulator):
    settings.GENERATION_IN_PROCESS = True
    server = BackendServer.objects.create(name="beat-probe", kind="ollama", base_url=emulator.url_for("ollama", "test-quick-1b"),
                                          health_status=HealthStatus.UNKNOWN)
    health_only = {"backend-health": settings.CELERY_BEAT_SCHEDULE["backend-health"]}
    beat = EmbeddedBeat(health_only, tick_s=0.05).start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            server.refresh_from_db()
            if server.last_checked_at is not None:
                break
            time.sleep(0.1)
    finally:
        beat.stop()
    assert server.last_checked_at is not None
    assert server.health_status == HealthStatus.UP
