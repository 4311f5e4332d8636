"""Writes for battles: start, submit a turn, vote, reveal. Each runs in one transaction."""
from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from arena.models import (
    Battle, BattleStatus, Generation, GenerationStatus, Side, Turn, Vote, Winner,
)
from arena.pairing import NotEnoughContenders, sample_pair
from arena.selectors import contenders_offerable

_system_random = random.SystemRandom()


class BattleError(Exception):
    """A refused action, with a message fit to show the rater."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def battle_group(battle: Battle) -> str:
    return f"battle.{battle.public_id.hex}"


def battle_start(*, rater, rng: random.Random | None = None) -> Battle:
    contenders = {c.pk: c for c in contenders_offerable()}
    try:
        a_id, b_id = sample_pair({pk: c.sampling_weight for pk, c in contenders.items()}, rng or _system_random)
    except NotEnoughContenders as exc:
        raise BattleError(f"No battle can start right now: {exc}", code="no_contenders") from None
    return Battle.objects.create(public_id=uuid.uuid4(), rater=rater, model_a=contenders[a_id],
                                 model_b=contenders[b_id])


def _check_owner(battle: Battle, rater) -> None:
    if battle.rater_id != rater.pk:
        raise BattleError("This battle belongs to another rater.", code="forbidden")


def prompt_check(prompt) -> None:
    """Refuse a prompt that cannot be sent, before anything is written."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise BattleError("Type a prompt first.", code="empty_prompt")
    if len(prompt) > settings.ARENA_MAX_PROMPT_CHARS:
        raise BattleError(f"The prompt is {len(prompt)} characters; the limit is {settings.ARENA_MAX_PROMPT_CHARS}.",
                          code="prompt_too_long")


def turn_submit(*, battle: Battle, rater, prompt: str) -> Turn:
    """Store the rater's prompt and one queued generation per side; enqueue both on commit."""
    from workers.dispatch import enqueue
    from workers.tasks import generate

    _check_owner(battle, rater)
    prompt_check(prompt)
    with transaction.atomic():
        battle = Battle.objects.select_for_update().get(pk=battle.pk)
        if battle.status != BattleStatus.ACTIVE:
            raise BattleError("This battle is over; start a new one.", code="battle_closed")
        last = battle.turns.order_by("-index").first()
        if last is not None:
            if last.generations.exclude(status=GenerationStatus.DONE).exists():
                raise BattleError("Wait for both answers before sending the next prompt.", code="busy")
            if last.index >= settings.ARENA_MAX_TURNS:
                raise BattleError(f"This battle reached its limit of {settings.ARENA_MAX_TURNS} turns; vote or "
                                  "start a new one.", code="turn_limit")
        since = timezone.now() - timedelta(minutes=1)
        recent = Turn.objects.filter(battle__rater=rater, created_at__gte=since).count()
        if recent >= settings.ARENA_PROMPTS_PER_MINUTE:
            raise BattleError("You are sending prompts too fast; wait a minute.", code="rate_limited")
        turn = Turn.objects.create(battle=battle, index=(last.index + 1) if last else 1, prompt=prompt)
        generations = [
            Generation.objects.create(turn=turn, side=side, contender=contender,
                                      decoding_params=contender.preset.params().as_dict())
            for side, contender in ((Side.A, battle.model_a), (Side.B, battle.model_b))
        ]
        for generation in generations:
            transaction.on_commit(lambda pk=generation.pk: enqueue(generate, pk))
    return turn


def battle_is_complete(battle: Battle) -> bool:
    generations = Generation.objects.filter(turn__battle=battle)
    return generations.exists() and not generations.exclude(status=GenerationStatus.DONE).exists()


def vote_cast(*, battle: Battle, rater, winner: str) -> Vote:
    if winner not in Winner.values:
        raise BattleError(f"Unknown vote {winner!r}.", code="bad_vote")
    _check_owner(battle, rater)
    with transaction.atomic():
        battle = Battle.objects.select_for_update().get(pk=battle.pk)
        if battle.status == BattleStatus.VOTED or battle.revealed_at is not None:
            raise BattleError("This battle already has a vote.", code="already_voted")
        if battle.status == BattleStatus.FAILED:
            raise BattleError("A side failed in this battle, so it cannot be voted on.", code="battle_failed")
        if not battle_is_complete(battle):
            raise BattleError("Wait until both answers are finished before voting.", code="not_finished")
        day_start = timezone.now() - timedelta(days=1)
        if Vote.objects.filter(rater=rater, created_at__gte=day_start).count() >= settings.ARENA_DAILY_VOTE_CAP:
            raise BattleError("You reached today's vote limit. Thank you!", code="vote_cap")
        last_finish = (Generation.objects.filter(turn__battle=battle).order_by("-finished_at")
                       .values_list("finished_at", flat=True).first())
        try:
            with transaction.atomic():
                vote = Vote.objects.create(
                    battle=battle, rater=rater, winner=winner,
                    seconds_after_completion=(timezone.now() - last_finish).total_seconds() if last_finish else None,
                )
        except IntegrityError:
            raise BattleError("This battle already has a vote.", code="already_voted") from None
        battle.status = BattleStatus.VOTED
        battle.revealed_at = timezone.now()
        battle.save(update_fields=["status", "revealed_at"])
    return vote


@dataclass(frozen=True)
class RevealedSide:
    side: str
    display_name: str
    organisation: str
    preset: str
    ttft_ms: float | None
    tpot_ms: float | None


def battle_reveal(*, battle: Battle, rater) -> list[RevealedSide]:
    """The names behind a and b: only once the battle has its vote."""
    _check_owner(battle, rater)
    # The caller's object may predate the vote (vote_cast writes through a locked copy).
    battle = Battle.objects.select_related("model_a__preset", "model_b__preset").get(pk=battle.pk)
    if battle.revealed_at is None:
        raise BattleError("Names are revealed after the vote.", code="not_revealed")
    revealed = []
    for side, contender in ((Side.A, battle.model_a), (Side.B, battle.model_b)):
        last = (Generation.objects.filter(turn__battle=battle, side=side).order_by("-turn__index").first())
        revealed.append(RevealedSide(side=side, display_name=contender.display_name,
                                     organisation=contender.organisation, preset=contender.preset.name,
                                     ttft_ms=last.time_to_first_token_ms if last else None,
                                     tpot_ms=last.time_per_output_token_ms if last else None))
    return revealed
