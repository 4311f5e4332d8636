"""Celery tasks. Thin: they take ids, load state, and call services or adapters."""
from __future__ import annotations

import logging

from celery import shared_task

log = logging.getLogger(__name__)


@shared_task(name="arena.check_backend_health", ignore_result=True, soft_time_limit=120, time_limit=150)
def check_backend_health() -> dict[str, int]:
    """Periodic (beat): probe every backend server; mark down after failures, up after success."""
    from arena.services.registry import check_all_servers

    counts = check_all_servers()
    log.info("backend health: %s", counts)
    return counts


@shared_task(name="arena.stream_contender", ignore_result=True, soft_time_limit=600, time_limit=660)
def stream_contender(contender_id: int, prompt: str, group: str, side: str) -> None:
    """Stream one answer of a contender to a channel-layer group as ordered, batched deltas."""
    from arena.services.streaming import contender_stream_to_group

    contender_stream_to_group(contender_id=contender_id, prompt=prompt, group=group, side=side)


@shared_task(name="arena.generate", ignore_result=True, soft_time_limit=900, time_limit=960)
def generate(generation_id: int) -> None:
    """Stream one side of one battle turn (see arena.services.generation)."""
    from arena.services.generation import generation_run

    generation_run(generation_id=generation_id)


@shared_task(name="arena.expire_generations", ignore_result=True, soft_time_limit=60, time_limit=90)
def expire_generations() -> int:
    """Periodic (beat): fail generations left queued or streaming past their deadline."""
    from arena.services.generation import generations_expire

    expired = generations_expire()
    if expired:
        log.info("expired %s generation(s) past their deadline", expired)
    return expired
