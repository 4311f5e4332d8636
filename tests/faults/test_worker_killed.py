"""A worker process killed (SIGKILL) mid-generation: the generation ends failed, never hangs."""
from __future__ import annotations

import asyncio
import time

import pytest
from django.utils import timezone

from arena.models import Battle, BattleStatus, Generation, GenerationStatus
from arena.services.generation import FAILED_SIDE_MESSAGE
from tests.faults.conftest import consumer_for, frames_until, start_worker
from workers.emulator import Fault
from workers.tasks import expire_generations, generate

pytestmark = pytest.mark.django_db(transaction=True)

DEADLINE_S = 3.0


def in_thread(fn, *args):
    """Run ORM or process work off the event loop, closing the thread's connection after."""
    def run():
        from django.db import connection

        try:
            return fn(*args)
        finally:
            connection.close()

    return asyncio.to_thread(run)


def test_killed_worker_generation_is_failed_by_the_sweeper_and_not_streamed_twice(
        worker_env, emulator_faults, contender_on, rater):
    # The side that will be in flight when the worker dies: a few tokens, then silence.
    faulty = contender_on("fault-target", "ollama", stall_timeout_s=30.0, deadline_s=DEADLINE_S)
    contender_on("test-quick-1b", "ollama", deadline_s=DEADLINE_S)
    emulator_faults.set_fault("fault-target", Fault(kind="stall", after_tokens=3))
    doomed = start_worker(worker_env, "doomed")
    workers = [doomed]

    async def scenario():
        ws = consumer_for(rater)
        assert (await ws.connect())[0]
        await ws.send_json_to({"type": "prompt", "text": "Tell me about tea."})
        await frames_until(ws, lambda f: any(x["type"] == "turn" for x in f))
        generation = await in_thread(lambda: Generation.objects.get(turn__battle__rater=rater, contender=faulty))
        side, other = generation.side, "b" if generation.side == "a" else "a"
        # Streaming for real: a delta of the faulty side reached the rater, the other side is done.
        before = await frames_until(ws, lambda f: any(x["type"] == "delta" and x["side"] == side for x in f)
                                    and any(x["type"] == "done" and x["side"] == other for x in f))
        # The faulty side's last batch may still be on its way (it stalls after a few tokens): take
        # what comes until the socket is quiet, so that any frame after the kill is the worker's.
        while not await ws.receive_nothing(timeout=0.5):
            before.append(await ws.receive_json_from(timeout=2))
        await in_thread(doomed.kill)
        killed_at = time.monotonic()
        streaming = await in_thread(lambda: Generation.objects.get(pk=generation.pk))
        assert streaming.status == GenerationStatus.STREAMING and streaming.attempts == 1

        # A restarted worker gets the same task again (what acks_late redelivers): it must not stream.
        revived = await in_thread(start_worker, worker_env, "revived")
        workers.append(revived)
        redelivered = generate.apply_async(args=(generation.pk,))
        await in_thread(revived.wait_for_log, f"arena.generate[{redelivered.id}] succeeded", 20.0)
        assert await ws.receive_nothing(timeout=0.5)  # no second stream, no frame at all
        still = await in_thread(lambda: Generation.objects.get(pk=generation.pk))
        assert still.status == GenerationStatus.STREAMING and still.attempts == 1

        # The periodic sweep (sent to the live worker, as beat does) ends it once the deadline passes.
        await asyncio.sleep(max(0.0, (still.deadline_at - timezone.now()).total_seconds()) + 0.1)
        expire_generations.apply_async()
        after = await frames_until(ws, lambda f: any(x["type"] == "failed" for x in f), timeout=10)
        failed_within = time.monotonic() - killed_at
        await ws.disconnect()
        return side, before, after, failed_within

    try:
        side, before, after, failed_within = asyncio.run(scenario())
    finally:
        for process in workers:
            process.stop()
    # Nothing but the plain failure (and perhaps a last batch sent before the kill) reaches the rater.
    assert [f for f in after if f["type"] != "delta"] == [{"type": "failed", "side": side,
                                                          "message": FAILED_SIDE_MESSAGE}]
    assert after[-1]["type"] == "failed"
    assert failed_within < DEADLINE_S + 10  # the deadline, a worker start and one sweep: never hanging
    stored = Generation.objects.get(turn__battle__rater=rater, contender=faulty)
    assert stored.status == GenerationStatus.FAILED and stored.error_code == "deadline"
    assert stored.attempts == 1
    # The text the rater saw before the crash is kept.
    shown = "".join(f["text"] for f in before + after if f["type"] == "delta" and f["side"] == side)
    assert shown and stored.text == shown
    assert Battle.objects.get(rater=rater).status == BattleStatus.FAILED
