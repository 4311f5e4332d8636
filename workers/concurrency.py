"""Per-server generation slots, shared by every worker process through Redis.

A slot is a member of a Redis sorted set scored by its expiry time, so a worker that dies mid-
generation frees its slot when the lease runs out instead of holding it forever. Without Redis
(the embedded default: one process) an in-process semaphore does the same job.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from workers.backends import BackendError

_ACQUIRE = """
local key, limit, now, expires, token = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, expires, token)
  redis.call('PEXPIRE', key, math.ceil((expires - now) * 1000))
  return 1
end
return 0
"""

_local_lock = threading.Lock()
_local_semaphores: dict[tuple[int, int], threading.BoundedSemaphore] = {}
_redis_client = None


def _redis():
    global _redis_client
    if _redis_client is None:
        import redis

        _redis_client = redis.Redis.from_url(settings.REDIS_URL)
    return _redis_client


def slot_key(server_id: int) -> str:
    return f"arena:server-slots:{server_id}"


def slots_in_use(server_id: int) -> int:
    if not settings.REDIS_URL:
        return 0
    client = _redis()
    client.zremrangebyscore(slot_key(server_id), "-inf", time.time())
    return int(client.zcard(slot_key(server_id)))


@contextmanager
def server_slot(*, server_id: int, limit: int, lease_s: float, wait_s: float) -> Iterator[None]:
    """Hold one of the server's ``limit`` generation slots; wait up to ``wait_s`` for one."""
    if settings.REDIS_URL:
        with _redis_slot(server_id=server_id, limit=limit, lease_s=lease_s, wait_s=wait_s):
            yield
    else:
        with _local_slot(server_id=server_id, limit=limit, wait_s=wait_s):
            yield


def _busy(wait_s: float) -> BackendError:
    return BackendError(
        f"The model server stayed at its concurrency limit for {wait_s:.0f} s.", retryable=True, code="busy"
    )


@contextmanager
def _redis_slot(*, server_id: int, limit: int, lease_s: float, wait_s: float) -> Iterator[None]:
    client = _redis()
    acquire = client.register_script(_ACQUIRE)
    token = uuid.uuid4().hex
    key = slot_key(server_id)
    give_up = time.monotonic() + wait_s
    delay = 0.01
    while True:
        now = time.time()
        if acquire(keys=[key], args=[limit, now, now + lease_s, token]):
            break
        if time.monotonic() >= give_up:
            raise _busy(wait_s)
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
    try:
        yield
    finally:
        client.zrem(key, token)


@contextmanager
def _local_slot(*, server_id: int, limit: int, wait_s: float) -> Iterator[None]:
    with _local_lock:
        semaphore = _local_semaphores.setdefault((server_id, limit), threading.BoundedSemaphore(limit))
    if not semaphore.acquire(timeout=wait_s):
        raise _busy(wait_s)
    try:
        yield
    finally:
        semaphore.release()
