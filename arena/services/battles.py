"""Writes for battles: start, submit a turn, vote, reveal. Each runs in one transaction."""
from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from arena import metrics
from arena.models import (
    Battle, BattleStatus, Generation, GenerationStatus, Side, Turn, Vote, Winner,
)
from arena.pairing import NotEnoughContenders, sample_pair
from arena.selectors import contenders_nameable, contenders_offerable
from workers.streaming import group_send

log = logging.getLogger(__name__)
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


def battle_start_named(*, rater, model_a_id, model_b_id) -> Battle:
    """A side-by-side battle between two contenders the user picked by name.

    Stored with ``anonymous=False`` so that it never counts towards the default ratings.
    """
    if not isinstance(model_a_id, int) or not isinstance(model_b_id, int) or isinstance(model_a_id, bool) \
            or isinstance(model_b_id, bool):
        raise BattleError("Pick two models first.", code="pick_models")
    if model_a_id == model_b_id:
        raise BattleError("Pick two different models.", code="same_model")
    contenders = {c.pk: c for c in contenders_nameable().filter(pk__in=[model_a_id, model_b_id])}
    missing = [pk for pk in (model_a_id, model_b_id) if pk not in contenders]
    if missing:
        raise BattleError("That model is not available right now; pick another one.", code="unknown_model")
    return Battle.objects.create(public_id=uuid.uuid4(), rater=rater, model_a=contenders[model_a_id],
                                 model_b=contenders[model_b_id], anonymous=False)


def _broadcast(battle: Battle, event: dict) -> None:
    group_send(battle_group(battle), event)


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
    # PostgreSQL text cannot hold NUL, and a lone surrogate (valid JSON, "\ud800") cannot be encoded:
    # either would fail the write after the battle row exists.
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise BattleError("The prompt contains a broken character; remove it and send it again.",
                          code="bad_characters") from None
    if "\x00" in prompt:
        raise BattleError("The prompt contains a NUL character; remove it and send it again.",
                          code="bad_characters")


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
            if last.generations.filter(status=GenerationStatus.STOPPED).exists():
                raise BattleError("The last answers were stopped: regenerate them or start a new battle.",
                                  code="stopped")
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


def turn_stop(*, battle: Battle, rater) -> int:
    """Stop both sides of the current turn; returns how many sides were still running.

    A queued side is stopped here (its task will find nothing to claim). A streaming side is only
    marked: its worker notices within a fraction of a second, stores the text so far and
    announces the stop itself, after its last delta. Late or repeated stops change nothing.
    """
    _check_owner(battle, rater)
    with transaction.atomic():
        battle = Battle.objects.select_for_update().get(pk=battle.pk)
        if battle.status != BattleStatus.ACTIVE:
            return 0
        last = battle.turns.order_by("-index").first()
        if last is None:
            return 0
        # of=self and no ordering join: lock the generation rows only, never their turn.
        running = list(Generation.objects.select_for_update(of=("self",)).order_by("side")
                       .filter(turn=last, status__in=[GenerationStatus.QUEUED, GenerationStatus.STREAMING]))
        now = timezone.now()
        for generation in running:
            if generation.status == GenerationStatus.QUEUED:
                generation.finished_at = now
                transaction.on_commit(lambda g=generation: _broadcast(battle, {
                    "type": "generation.stopped", "side": g.side, "seq": 0, "generation": g.pk}))
            generation.status = GenerationStatus.STOPPED
            generation.finish_reason = "stopped"
            generation.save(update_fields=["status", "finish_reason", "finished_at"])
    return len(running)


def turn_regenerate(*, battle: Battle, rater) -> list[Generation]:
    """Redo the last turn on both sides: its generations are replaced by new queued ones.

    New rows (new ids) rather than reset ones: a worker still streaming the old answer finds its
    row gone and quits, and its late deltas carry an id no client follows any more.
    """
    from workers.dispatch import enqueue
    from workers.tasks import generate

    _check_owner(battle, rater)
    with transaction.atomic():
        battle = (Battle.objects.select_for_update(of=("self",)).select_related("model_a__preset", "model_b__preset")
                  .get(pk=battle.pk))
        if battle.status == BattleStatus.VOTED or battle.revealed_at is not None:
            raise BattleError("This battle already has a vote, so its answers cannot be regenerated. "
                              "Start a new battle.", code="already_voted")
        if battle.status != BattleStatus.ACTIVE:
            raise BattleError("This battle is over; start a new one.", code="battle_closed")
        last = battle.turns.order_by("-index").first()
        if last is None:
            raise BattleError("There is nothing to regenerate yet: send a prompt first.", code="no_turn")
        # Each prompt or regeneration starts two generations: the same limit covers both.
        since = timezone.now() - timedelta(minutes=1)
        recent = Generation.objects.filter(turn__battle__rater=rater, created_at__gte=since).count()
        if recent >= 2 * settings.ARENA_PROMPTS_PER_MINUTE:
            raise BattleError("You are regenerating too fast; wait a minute.", code="rate_limited")
        old = list(Generation.objects.select_for_update(of=("self",)).order_by("side").filter(turn=last))
        Generation.objects.filter(pk__in=[g.pk for g in old]).delete()
        generations = [
            Generation.objects.create(turn=last, side=side, contender=contender,
                                      decoding_params=contender.preset.params().as_dict())
            for side, contender in ((Side.A, battle.model_a), (Side.B, battle.model_b))
        ]
        # Announced before the new tasks start, so every follower clears the old text first.
        transaction.on_commit(lambda: _broadcast(battle, {
            "type": "turn.regenerated", "index": last.index,
            "generations": {g.side: g.pk for g in generations}}))
        for generation in generations:
            transaction.on_commit(lambda pk=generation.pk: enqueue(generate, pk))
    return generations


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
        # One query for every check on the answers (votes per second depend on round trips).
        answers = Generation.objects.filter(turn__battle=battle).aggregate(
            total=Count("pk"), stopped=Count("pk", filter=Q(status=GenerationStatus.STOPPED)),
            unfinished=Count("pk", filter=~Q(status=GenerationStatus.DONE)), last_finish=Max("finished_at"))
        if answers["stopped"]:
            raise BattleError("Stopped answers cannot be voted on: regenerate them or start a new battle.",
                              code="stopped")
        if not answers["total"] or answers["unfinished"]:
            raise BattleError("Wait until both answers are finished before voting.", code="not_finished")
        day_start = timezone.now() - timedelta(days=1)
        if Vote.objects.filter(rater=rater, created_at__gte=day_start).count() >= settings.ARENA_DAILY_VOTE_CAP:
            raise BattleError("You reached today's vote limit. Thank you!", code="vote_cap")
        last_finish = answers["last_finish"]
        try:
            # No savepoint: on a conflict the whole transaction is rolled back by the error below.
            vote = Vote.objects.create(
                battle=battle, rater=rater, winner=winner,
                seconds_after_completion=(timezone.now() - last_finish).total_seconds() if last_finish else None,
            )
        except IntegrityError:
            raise BattleError("This battle already has a vote.", code="already_voted") from None
        battle.status = BattleStatus.VOTED
        battle.revealed_at = timezone.now()
        battle.save(update_fields=["status", "revealed_at"])
        transaction.on_commit(lambda: metrics.record_vote(winner=winner))
        transaction.on_commit(lambda: _vote_counted(vote.pk))
    return vote


def _vote_counted(vote_id: int) -> None:
    from leaderboard.tasks import record_vote
    from workers.dispatch import enqueue

    try:
        enqueue(record_vote, vote_id)
    except Exception:
        # The vote is stored; Elo and snapshots catch up at the next periodic refresh.
        log.exception("could not enqueue the rating update for vote %s", vote_id)


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
