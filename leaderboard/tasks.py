"""Celery tasks of the leaderboard. Thin: they call services."""
from __future__ import annotations

import logging

from celery import shared_task

log = logging.getLogger(__name__)


@shared_task(name="leaderboard.refresh", ignore_result=True, soft_time_limit=1800, time_limit=1900)
def refresh(categories: list[str] | None = None) -> dict:
    """Rate the categories whose votes changed and write their snapshots (beat, votes, admin).

    Running it twice, or late, only costs time: unchanged categories get no new snapshot. If another
    refresh holds the lock, this one asks for a later run instead of waiting, so votes cast
    meanwhile are not left for the next periodic run.
    """
    from leaderboard.services import leaderboard_refresh, schedule_refresh

    report = leaderboard_refresh(categories=categories)
    if report.busy:
        schedule_refresh()
    summary = report.summary()
    log.info("leaderboard.refresh: %s", summary)
    return summary


@shared_task(name="leaderboard.refresh_style", ignore_result=True, soft_time_limit=3600, time_limit=3700)
def refresh_style() -> dict:
    """Rate the style-control snapshots of every category whose votes changed.

    Scheduled by the refresh at most once per LEADERBOARD_STYLE_REFRESH_SECONDS (the style fit and
    its bootstrap cost far more than the plain ratings); with nothing new it returns at once.
    """
    from django.conf import settings

    from leaderboard.services import leaderboard_refresh, schedule_refresh

    report = leaderboard_refresh(style_control=True, style_only=True)
    if report.busy:
        schedule_refresh(style=True, countdown=getattr(settings, "LEADERBOARD_REFRESH_DEBOUNCE_SECONDS", 30.0))
    summary = report.summary()
    log.info("leaderboard.refresh_style: %s", summary)
    return summary


@shared_task(name="leaderboard.drain_elo", ignore_result=True, soft_time_limit=600, time_limit=660)
def drain_elo(wait_s: float = 0.0) -> int:
    """Apply online Elo for every vote committed and not applied yet, then ask for a debounced
    snapshot refresh. Enqueued by the first vote of each LEADERBOARD_ELO_DRAIN_SECONDS window.

    A repeated or late run is harmless: each vote is applied once, and the refresh is debounced.
    ``wait_s``: the rest of the window, waited here when the task runs in the web process's own
    pool (the embedded default); on the broker a countdown does that instead.
    """
    import time

    from leaderboard.services import elo_drain_now, schedule_refresh

    if wait_s > 0:
        time.sleep(min(wait_s, 60.0))

    applied = elo_drain_now()
    schedule_refresh()
    return applied


@shared_task(name="leaderboard.record_vote", ignore_result=True, soft_time_limit=600, time_limit=660)
def record_vote(vote_id: int | None = None) -> int:
    """Kept for messages queued before votes were drained in batches: runs the drain."""
    return drain_elo()
