"""Reads of the registry."""
from __future__ import annotations

from django.db.models import QuerySet

from arena.models import ArenaModel, HealthStatus


def contenders_offerable() -> QuerySet[ArenaModel]:
    """Contenders a battle may use: enabled, with weight, on a server whose last check passed."""
    return (
        ArenaModel.objects.filter(enabled=True, sampling_weight__gt=0, server__health_status=HealthStatus.UP)
        .select_related("server", "preset")
    )


def battle_for_rater(*, public_id, rater):
    """The rater's own battle, or None (someone else's battle looks exactly like a missing one)."""
    from arena.models import Battle

    return (Battle.objects.select_related("model_a__preset", "model_b__preset")
            .filter(public_id=public_id, rater=rater).first())


def battle_state(*, battle) -> dict:
    """Everything a rater may see of a battle: prompts, answers so far, statuses. Sides are only a/b.

    Answers still streaming come from the live partial record with its sequence number, so the
    client can apply only newer deltas.
    """
    from arena.models import BattleStatus, Generation, GenerationStatus
    from arena.services.generation import partial_name
    from workers import partials

    turns: dict[int, dict] = {}
    generations = (Generation.objects.filter(turn__battle=battle).select_related("turn")
                   .order_by("turn__index", "side"))
    for generation in generations:
        turn = turns.setdefault(generation.turn.index, {"index": generation.turn.index,
                                                        "prompt": generation.turn.prompt})
        if generation.status in (GenerationStatus.QUEUED, GenerationStatus.STREAMING):
            seq, text = partials.snapshot(partial_name(generation.pk))
        else:
            seq, text = None, generation.text
        turn[generation.side] = {"status": generation.status, "text": text, "seq": seq}
    all_done = bool(turns) and all(t[s]["status"] == GenerationStatus.DONE for t in turns.values() for s in "ab")
    return {
        "battle": battle.public_id.hex,
        "status": battle.status,
        "turns": list(turns.values()),
        "can_vote": battle.status == BattleStatus.ACTIVE and all_done,
    }


def battles_of_rater(*, rater, limit: int = 200):
    """The rater's own past battles with their votes; names only where revealed."""
    from arena.models import Battle

    return (Battle.objects.filter(rater=rater).select_related("model_a", "model_b", "vote")
            .prefetch_related("turns").order_by("-created_at")[:limit])
