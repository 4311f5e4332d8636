"""Database calls from async consumers, on a pool of threads.

Channels' ``database_sync_to_async`` runs every database call of a web process on one thread,
one at a time: with many raters on one process, each prompt or vote waits for everybody else's.
On PostgreSQL the calls here run on a small pool of threads instead (each thread has its own
connection, cleaned up before and after every call as Channels does). SQLite, the embedded
default, keeps the single thread: it allows one writer at a time anyway.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import SyncToAsync
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection

_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=settings.DB_ASYNC_THREADS, thread_name_prefix="db-async")
    return _executor


class _PooledDatabaseSyncToAsync(SyncToAsync):
    def __init__(self, func):
        super().__init__(func, thread_sensitive=False, executor=_pool())

    def thread_handler(self, loop, *args, **kwargs):
        close_old_connections()
        try:
            return super().thread_handler(loop, *args, **kwargs)
        finally:
            close_old_connections()


def db_async(func):
    """``database_sync_to_async``, on a thread pool where the database allows parallel writers."""
    if connection.vendor == "sqlite" or settings.DB_ASYNC_THREADS <= 1:
        return database_sync_to_async(func)
    return _PooledDatabaseSyncToAsync(func)
