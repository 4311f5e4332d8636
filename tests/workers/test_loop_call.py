"""A coroutine on the process's sender loop, waited for by a thread (workers.streaming.LoopCall)."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import TimeoutError as FutureTimeout

import pytest

from workers.streaming import LoopCall


def test_the_thread_gets_the_result_or_the_exception():
    async def answer():
        await asyncio.sleep(0.01)
        return 42

    async def broken():
        raise ValueError("no")

    assert LoopCall(answer).result(5) == 42
    with pytest.raises(ValueError, match="no"):
        LoopCall(broken).result(5)


def test_a_coroutine_that_cannot_even_start_is_reported_not_waited_for():
    def unstartable():
        raise LookupError("unknown backend kind")

    with pytest.raises(LookupError):
        LoopCall(unstartable).result(5)


def test_cancel_returns_once_the_coroutine_has_cleaned_up():
    started, cleaned = threading.Event(), threading.Event()

    async def forever():
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.05)  # closing a connection takes a moment
            cleaned.set()

    call = LoopCall(forever)
    assert started.wait(5)
    with pytest.raises(FutureTimeout):
        call.result(0.05)
    call.cancel()
    assert cleaned.is_set()
