"""Leaderboard refreshes travel on their own queue, so that the streaming worker never runs them."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.usefixtures("require_redis")


def queued(redis_client, queue: str) -> list[str]:
    return [json.loads(message)["headers"]["task"] for message in redis_client.lrange(queue, 0, -1)]


def test_refreshes_go_to_the_ratings_queue_and_everything_else_to_the_default_one(redis_client, settings):
    from leaderboard import tasks as leaderboard_tasks
    from workers import tasks as worker_tasks

    assert settings.RATINGS_QUEUE == "ratings" and settings.CELERY_BROKER_URL.startswith("redis://")
    leaderboard_tasks.refresh.apply_async(kwargs={"categories": ["overall"]})
    leaderboard_tasks.refresh_style.apply_async()
    leaderboard_tasks.drain_elo.apply_async()
    worker_tasks.generate.apply_async(args=[1])  # no worker runs here: the messages stay queued
    worker_tasks.check_backend_health.apply_async()
    assert sorted(queued(redis_client, "ratings")) == ["leaderboard.refresh", "leaderboard.refresh_style"]
    assert sorted(queued(redis_client, "celery")) == ["arena.check_backend_health", "arena.generate",
                                                      "leaderboard.drain_elo"]


def test_the_periodic_refresh_is_routed_like_the_others(redis_client):
    from workers.celery import app

    entry = app.conf.beat_schedule["leaderboard-refresh"]
    app.send_task(entry["task"])  # what beat does with the entry
    assert queued(redis_client, "ratings") == ["leaderboard.refresh"] and not queued(redis_client, "celery")
