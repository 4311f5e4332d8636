"""Start a task: on the Celery broker, or in this process's thread pool in the embedded default.

Both paths run the very same task function; only where it runs differs.
"""
from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections

log = logging.getLogger(__name__)
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(
            max_workers=settings.GENERATION_IN_PROCESS_THREADS, thread_name_prefix="generation"
        )
    return _executor


def _run_in_thread(task, args: tuple, kwargs: dict) -> None:
    try:
        task(*args, **kwargs)
    except Exception:
        log.exception("in-process task %s failed", task.name)
    finally:
        close_old_connections()


def enqueue(task, *args, **kwargs) -> Future | None:
    if settings.GENERATION_IN_PROCESS:
        return _pool().submit(_run_in_thread, task, args, kwargs)
    task.apply_async(args=args, kwargs=kwargs)
    return None


def queue_lengths(queues: list[str]) -> list[int]:
    """Messages waiting in each Celery queue (a Redis list on the broker); raises when Redis does
    not answer."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        return [int(client.llen(queue)) for queue in queues]
    finally:
        client.close()
