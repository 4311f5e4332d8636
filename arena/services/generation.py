"""Run one side's generation: stream from the backend, publish deltas, store the outcome.

Safe to run twice or late: only a queued generation is claimed; anything else is left alone.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import aclosing
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from arena import metrics
from arena.dbpool import release_connection
from arena.identity import names_mentioned
from arena.logs import battle_context
from arena.models import Battle, BattleStatus, Generation, GenerationStatus
from arena.selectors import contender_identity_names
from arena.services import generation_sql
from arena.services.battles import battle_group
from arena.services.registry import redact
from arena.services.streaming import conversation_for
from workers import partials
from workers.backends import BackendError, Delta, Finish, get_adapter
from workers.backends.base import DecodingParams
from workers.concurrency import server_slot
from workers.streaming import DeltaPublisher, LoopCall, group_send

log = logging.getLogger(__name__)

# What a rater sees when a side fails: nothing that could identify the model or its server.
FAILED_SIDE_MESSAGE = "This side could not answer. Start a new battle to keep going."


# How often a streaming worker looks whether its generation was stopped or replaced.
STOP_CHECK_INTERVAL_S = 0.25

# A queued generation no worker has claimed is given up this long after its server's deadline:
# the deadline counts from the claim, so a queued one gets the whole deadline plus this much queueing.
QUEUED_GRACE_S = 30.0


def storable_text(text: str) -> str:
    """Text PostgreSQL can store: a NUL becomes U+FFFD, a lone surrogate is replaced.

    A backend may send either (JSON allows "\\u0000" and "\\ud800"); stored as is, the write would
    fail and leave the generation streaming.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", errors="replace").decode("utf-8")
    return text


def partial_name(generation_id: int) -> str:
    return f"generation:{generation_id}"


class GenerationPublisher(DeltaPublisher):
    """Deltas tagged with their generation, so a consumer can drop those of a replaced answer.

    The tag is for consumers only; they never forward it to a browser.
    """

    def __init__(self, *, generation_id: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.generation_id = generation_id
        send = self._send
        self._send = lambda group, event, record=None: send(group, {**event, "generation": generation_id},
                                                            record=record)

    def stopped(self) -> None:
        self.final({"type": "generation.stopped"})


class _Halted(Exception):
    """The generation was stopped or replaced while streaming."""


class _StreamingInProcess:
    """The generations this process is streaming, with one status query for all of them.

    Every streaming thread asks whether its own generation was stopped or replaced; the answer
    comes from a shared set that one query refreshes at most every STOP_CHECK_INTERVAL_S,
    whichever thread finds it due. A hundred streams cost four queries a second, not four hundred.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._streaming: dict[int, int] = {}  # generation id -> streams of it in this process
        self._halted: set[int] = set()
        self._next_poll = float("-inf")

    def add(self, generation_id: int) -> None:
        with self._lock:
            self._streaming[generation_id] = self._streaming.get(generation_id, 0) + 1
            self._halted.discard(generation_id)

    def remove(self, generation_id: int) -> None:
        with self._lock:
            left = self._streaming.get(generation_id, 0) - 1
            if left > 0:
                self._streaming[generation_id] = left
            else:
                self._streaming.pop(generation_id, None)
                self._halted.discard(generation_id)

    def halted(self, generation_id: int) -> bool:
        if time.monotonic() >= self._next_poll and self._poll_lock.acquire(blocking=False):
            try:
                if time.monotonic() >= self._next_poll:
                    self._poll()
            finally:
                self._poll_lock.release()
        return generation_id in self._halted

    def _poll(self) -> None:
        self._next_poll = time.monotonic() + STOP_CHECK_INTERVAL_S
        with self._lock:
            asked = list(self._streaming)
        if not asked:
            return
        streaming = set(Generation.objects.filter(pk__in=asked, status=GenerationStatus.STREAMING)
                        .values_list("pk", flat=True))
        release_connection()  # back to the pool until the next poll
        with self._lock:
            # Only generations still registered: one that ended meanwhile must not stay marked.
            self._halted.update(pk for pk in asked if pk not in streaming and pk in self._streaming)


_streaming_here = _StreamingInProcess()


class _StopWatch:
    """Whether this stream's generation was stopped or replaced (see _StreamingInProcess)."""

    def __init__(self, generation_id: int) -> None:
        self.generation_id = generation_id

    def __enter__(self) -> _StopWatch:
        _streaming_here.add(self.generation_id)
        return self

    def __exit__(self, *exc_info) -> None:
        _streaming_here.remove(self.generation_id)

    def check(self) -> None:
        if _streaming_here.halted(self.generation_id):
            raise _Halted


def _claim(generation_id: int) -> Generation | None:
    # Claim with one conditional UPDATE, not read-lock-then-write: it locks only this generation
    # row and only for that statement (a stop locks battle, then generations; a longer claim
    # transaction could deadlock with it), and on SQLite it needs no read-to-write lock upgrade.
    generation = generation_sql.queued_generation(generation_id)
    if generation is None:
        return None
    now = timezone.now()
    deadline = now + timedelta(seconds=generation.contender.server.deadline_s)
    if not generation_sql.mark_claimed(generation_id, started_at=now, deadline_at=deadline):
        return None  # another run, a stop or a regeneration got there first
    generation.status = GenerationStatus.STREAMING
    generation.started_at, generation.deadline_at = now, deadline
    generation.attempts += 1
    return generation


def history_for(generation: Generation) -> list[tuple[str, str]]:
    """This side's own conversation: earlier prompts with this side's answers, then the new prompt."""
    turns: list[tuple[str, str]] = []
    if generation.turn.index <= 1:
        return [("user", generation.turn.prompt)]  # the first turn: nothing earlier to read
    earlier = (Generation.objects.filter(turn__battle_id=generation.turn.battle_id, side=generation.side,
                                         turn__index__lt=generation.turn.index)
               .select_related("turn").order_by("turn__index"))
    for previous in earlier:
        turns.append(("user", previous.turn.prompt))
        turns.append(("assistant", previous.text))
    turns.append(("user", generation.turn.prompt))
    return turns


def generation_run(*, generation_id: int) -> None:
    generation = _claim(generation_id)
    if generation is None:
        return
    with battle_context(generation.turn.battle.public_id):
        _stream_claimed(generation)


def _stream_claimed(generation: Generation) -> None:
    battle = generation.turn.battle
    contender = generation.contender
    server = contender.server
    publisher = GenerationPublisher(generation_id=generation.pk, group=battle_group(battle), side=generation.side,
                                    partial_name=partial_name(generation.pk))
    watch = _StopWatch(generation.pk)
    params = DecodingParams(**{**generation.decoding_params, "stop": tuple(generation.decoding_params.get("stop", ()))})
    messages = conversation_for(contender, history_for(generation))
    # The stream is network I/O for seconds: the connection goes back to the pool meanwhile.
    release_connection()
    chunks: list[str] = []
    error: BackendError | None = None
    with watch:  # this generation is among those the process's stop check looks at
        try:
            for _attempt in range(max(1, settings.GENERATION_MAX_ATTEMPTS)):
                error = None
                try:
                    with server_slot(server_id=server.pk, limit=server.max_concurrency,
                                     lease_s=server.deadline_s + 30, wait_s=server.deadline_s):
                        finish = _read_answer(watch, server.kind, contender.endpoint(), messages, params, publisher,
                                              chunks)
                        if finish is not None:
                            # All of the text is out before the answer counts as done: the other
                            # side announces "ready" as soon as it reads both done.
                            publisher.drain()
                            if _store_finished(generation, "".join(chunks), finish):
                                publisher.finish()
                                _flag_identity_leak(generation, "".join(chunks))
                                _announce_if_complete(battle)
                                return
                            raise _Halted
                    error = BackendError("The stream ended without finishing.", retryable=False, code="protocol")
                except BackendError as exc:
                    error = exc
                # A retry is only invisible to the rater when nothing was shown yet.
                if chunks or not error.retryable:
                    break
            if _store_failed(generation, "".join(chunks), error):
                publisher.fail(message=FAILED_SIDE_MESSAGE)
                return
            raise _Halted
        except _Halted:
            _halt(generation, publisher, "".join(chunks))


def _read_answer(watch: _StopWatch, kind: str, endpoint, messages, params: DecodingParams,
                 publisher: GenerationPublisher, chunks: list[str]) -> Finish | None:
    """Read the backend's answer in the process's sender loop, publishing as it comes; the Finish,
    or None if the stream ended without one. This thread only waits, and looks whether the
    generation was stopped or replaced; if so the read is cancelled (its connection closed, so the
    backend stops generating too) and _Halted raised.
    """
    call = LoopCall(lambda: _publish_answer(get_adapter(kind), endpoint, messages, params, publisher, chunks))
    while True:
        try:
            return call.result(STOP_CHECK_INTERVAL_S)
        except FutureTimeout:
            pass
        try:
            watch.check()
        except _Halted:
            call.cancel()
            raise


async def _publish_answer(adapter, endpoint, messages, params: DecodingParams, publisher: GenerationPublisher,
                          chunks: list[str]) -> Finish | None:
    async with aclosing(adapter.astream(endpoint, messages, params)) as reads:
        async for items in reads:
            sent = False
            for item in items:
                if isinstance(item, Delta):
                    text = storable_text(item.text)
                    chunks.append(text)
                    sent = publisher.add(text) or sent
                elif isinstance(item, Finish):
                    return item
            if sent:
                await publisher.apace()
    return None


def _halt(generation: Generation, publisher: GenerationPublisher, text: str) -> None:
    """Stopped: keep the text so far and say so. Replaced (row gone): say nothing at all."""
    stored = Generation.objects.filter(pk=generation.pk, status=GenerationStatus.STOPPED,
                                       finished_at__isnull=True).update(text=text, finished_at=timezone.now())
    if stored:
        publisher.stopped()
        metrics.record_generation_stopped(generation)
        _flag_identity_leak(generation, text)
    else:
        log.info("generation %s was replaced while streaming; its output is dropped", generation.pk)


def _flag_identity_leak(generation: Generation, text: str) -> None:
    """Flag the battle when an answer names a registered contender (the rater is not told)."""
    found = names_mentioned(text, contender_identity_names())
    if found:
        log.info("battle %s side %s: the answer names a contender", generation.turn.battle.public_id,
                 generation.side)
        Battle.objects.filter(pk=generation.turn.battle_id, identity_leak=False).update(identity_leak=True)


def _store_finished(generation: Generation, text: str, finish: Finish) -> bool:
    """Store a finished answer; False if it was stopped or replaced meanwhile (nothing written)."""
    stored = generation_sql.mark_finished(
        generation.pk, text=storable_text(text), finish_reason=storable_text(finish.finish_reason or "")[:32],
        input_tokens=finish.input_tokens, output_tokens=finish.output_tokens, ttft_ms=finish.ttft_ms,
        tpot_ms=finish.tpot_ms, finished_at=timezone.now())
    if stored:
        metrics.record_generation_done(generation, finish)
    return stored


def _store_failed(generation: Generation, text: str, error: BackendError) -> bool:
    """Store a failure and fail the battle; False if it was stopped or replaced meanwhile."""
    message = storable_text(redact(str(error), secrets=[generation.contender.server.auth_token]))
    with transaction.atomic():
        # Battle first, then generation: the lock order of every battle write.
        Battle.objects.select_for_update().filter(pk=generation.turn.battle_id).first()
        updated = Generation.objects.filter(pk=generation.pk, status=GenerationStatus.STREAMING).update(
            status=GenerationStatus.FAILED, text=storable_text(text), error_code=storable_text(error.code)[:32],
            error_message=message[:4000],
            finished_at=timezone.now(),
        )
        if not updated:
            return False
        Battle.objects.filter(pk=generation.turn.battle_id, status=BattleStatus.ACTIVE).update(
            status=BattleStatus.FAILED)
    log.warning("generation %s (battle %s side %s) failed: %s", generation.pk,
                generation.turn.battle.public_id, generation.side, error.code or "error")
    metrics.record_generation_failed(generation)
    return True


def _announce_if_complete(battle: Battle) -> None:
    # One read for both questions: is every answer done, and which are the last turn's.
    answers = generation_sql.battle_answers(battle.pk)
    if not answers or any(status != GenerationStatus.DONE for *_rest, status in answers):
        return
    last = answers[-1][0]
    current: dict[str, int | None] = {"a": None, "b": None}
    current.update({side: pk for index, side, pk, _status in answers if index == last})
    # Which answers are complete: a consumer drops the event if they were replaced meanwhile.
    group_send(battle_group(battle), {"type": "battle.ready", "generations": current})


def _overdue(generation: Generation, *, now, queued_grace_s: float) -> bool:
    if generation.status == GenerationStatus.STREAMING and generation.deadline_at is not None:
        return generation.deadline_at < now
    # Queued (or streaming without a recorded deadline): the server's whole deadline, plus the grace,
    # counted from when the turn was sent.
    since = generation.started_at or generation.created_at
    return since + timedelta(seconds=generation.contender.server.deadline_s + queued_grace_s) < now


def generations_expire(*, now=None, queued_grace_s: float = QUEUED_GRACE_S) -> int:
    """Fail every generation still queued or streaming past its deadline; returns how many it failed.

    The backstop for a worker process that died mid-generation (its task, if redelivered, finds the
    generation streaming and leaves it alone) and for a task lost with the broker: the generation
    fails with code "deadline", its battle fails as on any failure, and followers get the plain
    failure event. Safe to run often, late, or in several places at once.
    """
    now = now or timezone.now()
    live = [GenerationStatus.QUEUED, GenerationStatus.STREAMING]
    candidates = (Generation.objects.filter(status__in=live)
                  .filter(Q(deadline_at__lt=now)
                          | Q(deadline_at__isnull=True, created_at__lt=now - timedelta(seconds=queued_grace_s)))
                  .select_related("contender__server").order_by("pk"))
    expired = 0
    for generation in candidates:
        if _overdue(generation, now=now, queued_grace_s=queued_grace_s) and _expire(
                generation.pk, now=now, queued_grace_s=queued_grace_s):
            expired += 1
    return expired


def _expire(generation_id: int, *, now, queued_grace_s: float) -> bool:
    generation = (Generation.objects.select_related("turn__battle", "contender__server")
                  .filter(pk=generation_id).first())
    if generation is None or generation.status not in (GenerationStatus.QUEUED, GenerationStatus.STREAMING):
        return False
    if not _overdue(generation, now=now, queued_grace_s=queued_grace_s):
        return False  # claimed since the sweep listed it: it has a fresh deadline
    seq, text = 0, ""
    if generation.status == GenerationStatus.STREAMING:
        try:
            seq, text = partials.snapshot(partial_name(generation.pk))
        except Exception:  # the text so far is a courtesy; the failure must be stored regardless
            log.warning("generation %s: no partial text to keep", generation.pk, exc_info=True)
    battle = generation.turn.battle
    with transaction.atomic():
        # Battle first, then generation: the lock order of every battle write.
        Battle.objects.select_for_update().filter(pk=battle.pk).first()
        # Only if nothing moved since it was read: a claim in between gives it a fresh deadline.
        updated = Generation.objects.filter(
            pk=generation.pk, status=generation.status, deadline_at=generation.deadline_at,
        ).update(status=GenerationStatus.FAILED, text=storable_text(text), error_code="deadline",
                 error_message=f"No answer within the deadline ({generation.contender.server.deadline_s:g} s) "
                               f"while {generation.status}.",
                 finished_at=now)
        if not updated:
            return False
        Battle.objects.filter(pk=battle.pk, status=BattleStatus.ACTIVE).update(status=BattleStatus.FAILED)
        transaction.on_commit(lambda: _announce_expired(generation, seq))
    log.warning("generation %s (battle %s side %s) failed: deadline passed while %s", generation.pk,
                battle.public_id, generation.side, generation.status)
    metrics.record_generation_failed(generation)
    return True


def _announce_expired(generation: Generation, seq: int) -> None:
    try:
        group_send(battle_group(generation.turn.battle), {
            "type": "generation.failed", "side": generation.side, "seq": seq, "message": FAILED_SIDE_MESSAGE,
            "generation": generation.pk})
    except Exception:
        # Stored as failed either way: a reconnecting client reads it from the battle's state.
        log.warning("generation %s: could not announce the failure", generation.pk, exc_info=True)
