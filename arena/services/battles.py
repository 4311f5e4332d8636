"""Writes for battles: start, submit a turn, vote, reveal. Each runs in one transaction."""
from __future__ import annotations

import copy
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from arena import metrics
from arena.models import (
    Battle, BattleStatus, Generation, GenerationStatus, Side, Turn, Vote, Winner,
)
from arena.pairing import NotEnoughContenders, sample_pair
from arena.selectors import contenders_nameable, contenders_offerable
from arena.services import vote_sql
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
    return group_for(battle.public_id)


def group_for(public_id: uuid.UUID) -> str:
    """The battle's channel-layer group, from its public id alone (before its row exists)."""
    return f"battle.{public_id.hex}"


def battle_start(*, rater, rng: random.Random | None = None, public_id: uuid.UUID | None = None) -> Battle:
    """A new anonymous battle; ``public_id`` lets the caller join its group before it exists."""
    contenders = {c.pk: c for c in contenders_offerable()}
    try:
        a_id, b_id = sample_pair({pk: c.sampling_weight for pk, c in contenders.items()}, rng or _system_random)
    except NotEnoughContenders as exc:
        raise BattleError(f"No battle can start right now: {exc}", code="no_contenders") from None
    return Battle.objects.create(public_id=public_id or uuid.uuid4(), rater=rater, model_a=contenders[a_id],
                                 model_b=contenders[b_id])


def battle_start_named(*, rater, model_a_id, model_b_id, public_id: uuid.UUID | None = None) -> Battle:
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
    return Battle.objects.create(public_id=public_id or uuid.uuid4(), rater=rater, model_a=contenders[model_a_id],
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


@dataclass(frozen=True)
class SentTurn:
    """A stored turn and the ids of its two queued generations by side (what a client follows)."""

    turn: Turn
    generations: dict[str, int]


def turn_submit(*, battle: Battle, rater, prompt: str) -> Turn:
    """Store the rater's prompt and one queued generation per side; enqueue both on commit."""
    return turn_send(battle=battle, rater=rater, prompt=prompt).turn


def turn_send(*, battle: Battle, rater, prompt: str) -> SentTurn:
    """``turn_submit``, also returning the new generations' ids (so nobody has to read them back)."""
    _check_owner(battle, rater)
    prompt_check(prompt)
    with transaction.atomic():
        # The contenders and presets come with the lock: each side's decoding parameters are copied below.
        battle = (Battle.objects.select_for_update(of=("self",)).select_related("model_a__preset", "model_b__preset")
                  .get(pk=battle.pk))
        if battle.status != BattleStatus.ACTIVE:
            raise BattleError("This battle is over; start a new one.", code="battle_closed")
        last = battle.turns.order_by("-index").first()
        if last is not None:
            statuses = set(last.generations.values_list("status", flat=True))
            if GenerationStatus.STOPPED in statuses:
                raise BattleError("The last answers were stopped: regenerate them or start a new battle.",
                                  code="stopped")
            if statuses - {GenerationStatus.DONE}:
                raise BattleError("Wait for both answers before sending the next prompt.", code="busy")
            if last.index >= settings.ARENA_MAX_TURNS:
                raise BattleError(f"This battle reached its limit of {settings.ARENA_MAX_TURNS} turns; vote or "
                                  "start a new one.", code="turn_limit")
        return _turn_create(battle, rater, prompt, index=(last.index + 1) if last else 1)


def battle_start_with_turn(*, rater, prompt: str, rng: random.Random | None = None,
                           public_id: uuid.UUID | None = None) -> SentTurn:
    """``battle_start`` and its first ``turn_submit`` in one transaction (``sent.turn.battle`` is the battle).

    Nobody else can see the battle before it commits, so there is nothing to lock or check but the
    prompt and the rater's rate limit; a prompt refused either way starts no battle.
    """
    prompt_check(prompt)
    with transaction.atomic():
        battle = battle_start(rater=rater, rng=rng, public_id=public_id)
        return _turn_create(battle, rater, prompt, index=1)


def _turn_create(battle: Battle, rater, prompt: str, *, index: int) -> SentTurn:
    """Inside the caller's transaction: the rate limit, the turn, its generations, their tasks on commit."""
    from workers.dispatch import enqueue
    from workers.tasks import generate

    since = timezone.now() - timedelta(minutes=1)
    recent = Turn.objects.filter(battle__rater=rater, created_at__gte=since).count()
    if recent >= settings.ARENA_PROMPTS_PER_MINUTE:
        raise BattleError("You are sending prompts too fast; wait a minute.", code="rate_limited")
    turn = Turn.objects.create(battle=battle, index=index, prompt=prompt)
    generations = _queue_generations(battle, turn)
    for generation in generations:
        transaction.on_commit(lambda pk=generation.pk: enqueue(generate, pk))
    return SentTurn(turn=turn, generations={g.side: g.pk for g in generations})


def _queue_generations(battle: Battle, turn: Turn) -> list[Generation]:
    """One queued generation per side, in one INSERT (the ids come back with it)."""
    return Generation.objects.bulk_create([
        Generation(turn=turn, side=side, contender=contender, decoding_params=contender.preset.params().as_dict())
        for side, contender in ((Side.A, battle.model_a), (Side.B, battle.model_b))
    ])


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
        generations = _queue_generations(battle, last)
        # Announced before the new tasks start, so every follower clears the old text first.
        transaction.on_commit(lambda: _broadcast(battle, {
            "type": "turn.regenerated", "index": last.index,
            "generations": {g.side: g.pk for g in generations}}))
        for generation in generations:
            transaction.on_commit(lambda pk=generation.pk: enqueue(generate, pk))
    return generations


def vote_cast(*, battle: Battle, rater, winner: str) -> Vote:
    return _vote(battle=battle, rater=rater, winner=winner, names=False)[0]


def vote_and_reveal(*, battle: Battle, rater, winner: str) -> list[RevealedSide]:
    """``vote_cast`` then ``battle_reveal`` in one go, the names from the rows the vote already read."""
    _vote_row, locked, answers = _vote(battle=battle, rater=rater, winner=winner, names=True)
    return _revealed(locked.names, answers)


def _vote(*, battle: Battle, rater, winner: str, names: bool) -> tuple[Vote, vote_sql.LockedBattle, list[tuple]]:
    if winner not in Winner.values:
        raise BattleError(f"Unknown vote {winner!r}.", code="bad_vote")
    _check_owner(battle, rater)
    # Four statements written out once (arena.services.vote_sql): a vote's speed is its CPU.
    with transaction.atomic():
        # The lock first: every check on the answers below reads what committed before it (a stop,
        # a regeneration). The same statement counts the rater's votes of the last day (the cap
        # needs no lock) and, when they are to be revealed, reads the contenders' names.
        locked = vote_sql.lock_battle(battle_id=battle.pk, rater_id=rater.pk,
                                      votes_since=timezone.now() - timedelta(days=1), names=names)
        if locked is None:
            raise Battle.DoesNotExist("Battle matching query does not exist.")
        if locked.status == BattleStatus.VOTED or locked.revealed_at is not None:
            raise BattleError("This battle already has a vote.", code="already_voted")
        if locked.status == BattleStatus.FAILED:
            raise BattleError("A side failed in this battle, so it cannot be voted on.", code="battle_failed")
        # One query for every check on the answers and for the reveal (votes per second depend on round trips).
        answers = vote_sql.answers(battle.pk)
        statuses = {status for _index, _side, status, *_rest in answers}
        if GenerationStatus.STOPPED in statuses:
            raise BattleError("Stopped answers cannot be voted on: regenerate them or start a new battle.",
                              code="stopped")
        if not answers or statuses != {GenerationStatus.DONE}:
            raise BattleError("Wait until both answers are finished before voting.", code="not_finished")
        if locked.votes_today >= settings.ARENA_DAILY_VOTE_CAP:
            raise BattleError("You reached today's vote limit. Thank you!", code="vote_cap")
        last_finish = max((finished for *_head, finished, _ttft, _tpot in answers if finished), default=None)
        now = timezone.now()
        after = (now - last_finish).total_seconds() if last_finish else None
        try:
            # No savepoint: on a conflict the whole transaction is rolled back by the error below.
            vote_id = vote_sql.insert_vote(battle_id=battle.pk, rater_id=rater.pk, winner=winner, created_at=now,
                                           seconds_after_completion=after)
        except IntegrityError:
            raise BattleError("This battle already has a vote.", code="already_voted") from None
        vote_sql.mark_voted(battle_id=battle.pk, status=BattleStatus.VOTED, revealed_at=now)
        transaction.on_commit(lambda: metrics.record_vote(winner=winner))
        transaction.on_commit(lambda: _vote_counted(vote_id))
    voted = copy.copy(battle)  # the caller's object is left as it was read
    voted.status, voted.revealed_at = BattleStatus.VOTED, now
    vote = Vote(pk=vote_id, battle=voted, rater=rater, winner=winner, created_at=now, seconds_after_completion=after)
    vote._state.adding, vote._state.db = False, transaction.get_connection().alias
    return vote, locked, answers


def _vote_counted(vote_id: int) -> None:
    """After the vote commits: ask for the debounced Elo drain (one Redis call; a task only for the
    first vote of a window), which applies every vote not applied yet."""
    from leaderboard.services import schedule_elo_drain

    try:
        schedule_elo_drain()  # logs and returns False when Redis or the broker is down
    except Exception:
        # The vote is stored; Elo and snapshots catch up at the next drain or periodic refresh.
        log.exception("could not ask for the rating update of vote %s", vote_id)


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
    names = {side: (contender.display_name, contender.organisation, contender.preset.name)
             for side, contender in ((Side.A, battle.model_a), (Side.B, battle.model_b))}
    return _revealed(names, vote_sql.answers(battle.pk))


def _revealed(names: dict[str, tuple[str, str, str]], answers: list[tuple]) -> list[RevealedSide]:
    """Each side's contender (display name, organisation, preset) with its last turn's speed."""
    last = {side: (ttft, tpot) for _index, side, _status, _finished, ttft, tpot in answers}  # the last turn wins
    revealed = []
    for side in (Side.A, Side.B):
        display_name, organisation, preset = names[side]
        ttft, tpot = last.get(side, (None, None))
        revealed.append(RevealedSide(side=side, display_name=display_name, organisation=organisation, preset=preset,
                                     ttft_ms=ttft, tpot_ms=tpot))
    return revealed
