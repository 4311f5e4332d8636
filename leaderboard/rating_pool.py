"""Rating the categories of a refresh in several processes at once.

A refresh rates each category that changed (a fit and a 1,000-round bootstrap: about a second of
CPU-bound numpy at 200 models), and the categories do not depend on each other. With
``LEADERBOARD_RATING_PROCESSES`` above 1 they are handed to a pool of that many processes (started
with "spawn" on first use and kept for later refreshes). A bootstrap already keeps about two cores
busy (a drawing and a fitting thread), so N processes divide a many-category refresh by up to N
on 2N cores; on two cores a pool gains about a tenth (bench/refresh.py). The engine is pure numpy and scipy: a child needs no Django
settings and touches no database; the refresh process still reads the votes and writes every
snapshot.

With 1 (the default) nothing is started: each category is rated in the refresh's own process,
when its result is asked for, exactly as without a pool. A pool that breaks (a child killed) is
dropped and its categories are rated in the refresh's process instead.
"""
from __future__ import annotations

import importlib
import logging
import multiprocessing
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

from django.conf import settings

log = logging.getLogger(__name__)

_lock = threading.Lock()
_pool: tuple[int, ProcessPoolExecutor] | None = None


def processes() -> int:
    return max(1, int(getattr(settings, "LEADERBOARD_RATING_PROCESSES", 1) or 1))


class Rating:
    """One category's rating, in the pool or later in this process; ``result()`` returns it or
    raises what the rating raised."""

    def __init__(self, function: Callable, kwargs: dict, future: Future | None):
        self._function, self._kwargs, self._future = function, kwargs, future

    def result(self):
        if self._future is None:
            return self._function(**self._kwargs)
        try:
            return self._future.result()
        except BrokenProcessPool:
            log.warning("the rating pool broke; rating in the refresh's process instead")
            _discard_pool()
            return self._function(**self._kwargs)


def _executor(size: int) -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None or _pool[0] != size:
            if _pool is not None:
                _pool[1].shutdown(wait=False, cancel_futures=True)
            _pool = (size, ProcessPoolExecutor(max_workers=size, mp_context=multiprocessing.get_context("spawn")))
        return _pool[1]


def _discard_pool() -> None:
    global _pool
    with _lock:
        if _pool is not None:
            _pool[1].shutdown(wait=False, cancel_futures=True)
            _pool = None


def submit(function: Callable, **kwargs) -> Rating:
    """Start ``function(**kwargs)`` (a picklable engine function on picklable values) in the pool,
    or prepare it for this process when there is no pool."""
    size = processes()
    if size <= 1:
        return Rating(function, kwargs, None)
    try:
        return Rating(function, kwargs, _executor(size).submit(function, **kwargs))
    except Exception as error:  # noqa: BLE001 - e.g. a daemonic process may not start children
        log.warning("the rating pool is not available (%s: %s); rating in the refresh's process",
                    type(error).__name__, error)
        _discard_pool()
        return Rating(function, kwargs, None)


def _import_engine() -> None:
    importlib.import_module("leaderboard.engine")


def warm_up() -> None:
    """Start every process of the pool and import the engine in each (about a second), so that
    the first refresh does not wait for it."""
    size = processes()
    if size > 1:
        started = [submit(_import_engine) for _ in range(size)]
        for rating in started:
            rating.result()
        if _pool is not None:
            log.info("rating pool: %s processes ready", size)


def _on_worker_ready(sender=None, **kwargs) -> None:
    """A worker that takes the ratings queue starts its pool at once (in the background)."""
    queues = {queue.name for queue in getattr(getattr(sender, "task_consumer", None), "queues", ())}
    if settings.RATINGS_QUEUE in queues and processes() > 1:
        threading.Thread(target=warm_up, name="rating-pool-warm-up", daemon=True).start()


def connect_worker_signals() -> None:
    from celery.signals import worker_ready

    worker_ready.connect(_on_worker_ready, weak=False, dispatch_uid="arena-rating-pool")


def shutdown() -> None:
    """Stop the pool's processes (tests, benchmarks); at exit they are stopped anyway."""
    _discard_pool()
