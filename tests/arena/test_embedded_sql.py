"""Statements written out as SQL (a vote, the role check, the resume and state reads, a generation's claim)
on the embedded default's SQLite."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.fixtures.services import REPO_ROOT

SCRIPT = r'''
import json, uuid
from datetime import timedelta
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0, interactive=False)
from django.contrib.auth.models import User
from django.utils import timezone
from arena.models import (ArenaModel, BackendServer, Battle, BattleStatus, DecodingPreset, Generation,
                          GenerationStatus, HealthStatus, Side, Turn, Vote)
from arena.services.battles import BattleError, battle_reveal, vote_and_reveal, vote_cast

preset = DecodingPreset.objects.create(name="embedded-preset", temperature=0.7, max_new_tokens=64, seed=1)
contenders = []
for label in ("a", "b"):
    server = BackendServer.objects.create(name=f"embedded-{label}", kind="tgi", base_url=f"http://127.0.0.1:9/{label}",
                                          health_status=HealthStatus.UP)
    contenders.append(ArenaModel.objects.create(display_name=f"Embedded {label.upper()}", organisation=f"Org {label}",
                                                server=server, backend_model_id="tgi", preset=preset, enabled=True))
rater = User.objects.create_user("embedded-rater", password="pw-embedded-1")
finished = timezone.now() - timedelta(seconds=4)

def battle(status=GenerationStatus.DONE):
    b = Battle.objects.create(public_id=uuid.uuid4(), rater=rater, model_a=contenders[0], model_b=contenders[1])
    t = Turn.objects.create(battle=b, index=1, prompt="Which is better?")
    for side, contender, ttft in ((Side.A, contenders[0], 40.0), (Side.B, contenders[1], 55.0)):
        Generation.objects.create(turn=t, side=side, contender=contender, status=status, text="answer",
                                  time_to_first_token_ms=ttft, time_per_output_token_ms=9.0,
                                  finished_at=finished if status == GenerationStatus.DONE else None)
    return b

out = {}
first = battle()
vote = vote_cast(battle=first, rater=rater, winner="model_b")
stored = Vote.objects.get(battle=first)
out["vote"] = [vote.pk == stored.pk, stored.winner, round(stored.seconds_after_completion), vote.battle.status]
row = Battle.objects.get(pk=first.pk)
out["battle"] = [row.status, row.revealed_at is None, row.revealed_at == vote.created_at == stored.created_at]
try:
    vote_cast(battle=first, rater=rater, winner="tie")
except BattleError as exc:
    out["again"] = exc.code
out["revealed"] = [[r.side, r.display_name, r.organisation, r.preset, r.ttft_ms] for r in battle_reveal(battle=first, rater=rater)]
second = battle()
out["reveal_now"] = [[r.display_name, r.ttft_ms] for r in vote_and_reveal(battle=second, rater=rater, winner="tie")]
try:
    vote_cast(battle=battle(GenerationStatus.STREAMING), rater=rater, winner="tie")
except BattleError as exc:
    out["unfinished"] = exc.code
out["votes"] = Vote.objects.count()
from django.contrib.auth.models import Group
from arena import roles
Group.objects.create(name="rater").user_set.add(rater)
staff = User.objects.create_user("embedded-staff", password="pw-embedded-1", is_staff=True)
inactive = User.objects.create_user("embedded-gone", password="pw-embedded-1", is_active=False, is_staff=True)
from arena.selectors import battle_for_rater, battle_state
state = battle_state(battle=Battle.objects.get(pk=first.pk))
out["state"] = [state["status"], state["can_vote"], [(t["index"], t["prompt"], t["a"], t["b"]) for t in state["turns"]]]
out["resume"] = [battle_for_rater(public_id=first.public_id, rater=rater).pk == first.pk,
                 battle_for_rater(public_id=first.public_id, rater=rater, anonymous=True).public_id == first.public_id,
                 battle_for_rater(public_id=first.public_id, rater=rater, anonymous=False),
                 battle_for_rater(public_id=first.public_id, rater=staff),
                 battle_for_rater(public_id=uuid.uuid4(), rater=rater)]
out["may"] = [roles.user_may(rater.pk, {"rater"}), roles.user_may(rater.pk, {"viewer", "admin"}),
              roles.user_may(staff.pk, {"rater", "admin"}), roles.user_may(staff.pk, {"rater"}),
              roles.user_may(inactive.pk, {"admin"})]
from datetime import date
from decimal import Decimal
from arena.services.generation import _claim
ArenaModel.objects.filter(pk=contenders[0].pk).update(aliases=["emb-a", "Embé"], parameter_count_b=Decimal("7.5"),
                                                      knowledge_cutoff=date(2024, 5, 1), commercial_use=True)
queued = Generation.objects.filter(turn__battle=battle(GenerationStatus.QUEUED), side=Side.A).get()
def values(obj):
    return [getattr(obj, f.attname) for f in type(obj)._meta.concrete_fields]
loaded = Generation.objects.select_related("turn__battle", "contender__server", "contender__preset").get(pk=queued.pk)
claimed = _claim(queued.pk)
parts = lambda g: [g.turn, g.turn.battle, g.contender, g.contender.server, g.contender.preset]
out["claim"] = [all(values(a) == values(b) for a, b in zip(parts(claimed), parts(loaded))),
                claimed.contender.aliases, str(claimed.contender.parameter_count_b),
                str(claimed.contender.knowledge_cutoff), isinstance(claimed.turn.battle.public_id, uuid.UUID),
                Generation.objects.get(pk=queued.pk).status, Generation.objects.get(pk=queued.pk).attempts,
                Generation.objects.get(pk=queued.pk).started_at == claimed.started_at, _claim(queued.pk)]
from arena.services.generation import _store_finished
from arena.services.generation_sql import battle_answers
from workers.backends import Finish
finish = Finish(finish_reason="stop", input_tokens=3, output_tokens=5, ttft_ms=40.0, tpot_ms=9.0)
stored_now = _store_finished(claimed, "the answer", finish)
done = Generation.objects.get(pk=queued.pk)
out["finish"] = [stored_now, done.status, done.text, done.output_tokens, done.time_per_output_token_ms,
                 done.finished_at is not None, _store_finished(claimed, "again", finish)]
out["answers"] = [[index, side, pk == queued.pk, status] for index, side, pk, status in battle_answers(claimed.turn.battle_id)]
print(json.dumps(out))
'''


def test_a_vote_and_a_claim_on_sqlite_are_stored_checked_and_revealed(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG"}}
    env.update({"DJANGO_SETTINGS_MODULE": "arena.settings", "SQLITE_PATH": str(tmp_path / "db.sqlite3")})
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["vote"] == [True, "model_b", 4, "voted"]
    assert out["battle"] == ["voted", False, True]
    assert out["again"] == "already_voted"
    assert out["revealed"] == [["a", "Embedded A", "Org a", "embedded-preset", 40.0],
                               ["b", "Embedded B", "Org b", "embedded-preset", 55.0]]
    assert out["reveal_now"] == [["Embedded A", 40.0], ["Embedded B", 55.0]]
    assert out["unfinished"] == "not_finished"
    assert out["votes"] == 2
    assert out["state"] == ["voted", False, [[1, "Which is better?", {"status": "done", "text": "answer", "seq": None},
                                              {"status": "done", "text": "answer", "seq": None}]]]
    assert out["resume"] == [True, True, None, None, None]
    assert out["may"] == [True, False, True, False, False]
    assert out["claim"] == [True, ["emb-a", "Embé"], "7.50", "2024-05-01", True, "streaming", 1, True, None]
    assert out["finish"] == [True, "done", "the answer", 5, 9.0, True, False]
    assert out["answers"] == [[1, "a", True, "done"], [1, "b", False, "queued"]]
