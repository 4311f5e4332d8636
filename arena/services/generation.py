"""Run one side's generation: stream from the backend, publish deltas, store the outcome.

Safe to run twice or late: only a queued generation is claimed; anything else is left alone.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from arena.models import Battle, BattleStatus, Generation, GenerationStatus
from arena.services.battles import battle_group, battle_is_complete
from arena.services.registry import redact
from arena.services.streaming import conversation_for
from workers.backends import BackendError, Delta, Finish, get_adapter
from workers.backends.base import DecodingParams
from workers.concurrency import server_slot
from workers.streaming import DeltaPublisher

log = logging.getLogger(__name__)

# What a rater sees when a side fails: nothing that could identify the model or its server.
FAILED_SIDE_MESSAGE = "This side could not answer. Start a new battle to keep going."


def partial_name(generation_id: int) -> str:
    return f"generation:{generation_id}"


def _claim(generation_id: int) -> Generation | None:
    with transaction.atomic():
        generation = (Generation.objects.select_for_update()
                      .select_related("turn__battle", "contender__server", "contender__preset")
                      .filter(pk=generation_id).first())
        if generation is None or generation.status != GenerationStatus.QUEUED:
            return None
        now = timezone.now()
        generation.status = GenerationStatus.STREAMING
        generation.started_at = now
        generation.deadline_at = now + timedelta(seconds=generation.contender.server.deadline_s)
        generation.attempts += 1
        generation.save(update_fields=["status", "started_at", "deadline_at", "attempts"])
        return generation


def history_for(generation: Generation) -> list[tuple[str, str]]:
    """This side's own conversation: earlier prompts with this side's answers, then the new prompt."""
    turns: list[tuple[str, str]] = []
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
    battle = generation.turn.battle
    contender = generation.contender
    server = contender.server
    publisher = DeltaPublisher(group=battle_group(battle), side=generation.side,
                                partial_name=partial_name(generation.pk))
    params = DecodingParams(**{**generation.decoding_params, "stop": tuple(generation.decoding_params.get("stop", ()))})
    messages = conversation_for(contender, history_for(generation))
    chunks: list[str] = []
    error: BackendError | None = None
    for _attempt in range(max(1, settings.GENERATION_MAX_ATTEMPTS)):
        error = None
        try:
            with server_slot(server_id=server.pk, limit=server.max_concurrency, lease_s=server.deadline_s + 30,
                             wait_s=server.deadline_s):
                for item in get_adapter(server.kind).stream(contender.endpoint(), messages, params):
                    if isinstance(item, Delta):
                        chunks.append(item.text)
                        publisher.add(item.text)
                    elif isinstance(item, Finish):
                        _store_finished(generation, "".join(chunks), item)
                        publisher.finish()
                        _announce_if_complete(battle)
                        return
            error = BackendError("The stream ended without finishing.", retryable=False, code="protocol")
        except BackendError as exc:
            error = exc
        # A retry is only invisible to the rater when nothing was shown yet.
        if chunks or not error.retryable:
            break
    _store_failed(generation, "".join(chunks), error)
    publisher.fail(message=FAILED_SIDE_MESSAGE)


def _store_finished(generation: Generation, text: str, finish: Finish) -> None:
    Generation.objects.filter(pk=generation.pk).update(
        status=GenerationStatus.DONE, text=text, finish_reason=finish.finish_reason,
        input_tokens=finish.input_tokens, output_tokens=finish.output_tokens,
        time_to_first_token_ms=finish.ttft_ms, time_per_output_token_ms=finish.tpot_ms,
        finished_at=timezone.now(),
    )


def _store_failed(generation: Generation, text: str, error: BackendError) -> None:
    message = redact(str(error), secrets=[generation.contender.server.auth_token])
    log.warning("generation %s (battle %s side %s) failed: %s", generation.pk,
                generation.turn.battle.public_id, generation.side, error.code or "error")
    with transaction.atomic():
        Generation.objects.filter(pk=generation.pk).update(
            status=GenerationStatus.FAILED, text=text, error_code=error.code[:32], error_message=message[:4000],
            finished_at=timezone.now(),
        )
        Battle.objects.filter(pk=generation.turn.battle_id, status=BattleStatus.ACTIVE).update(
            status=BattleStatus.FAILED)


def _announce_if_complete(battle: Battle) -> None:
    if battle_is_complete(battle):
        async_to_sync(get_channel_layer().group_send)(battle_group(battle), {"type": "battle.ready"})
