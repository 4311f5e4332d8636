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
