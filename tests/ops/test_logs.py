"""Structured logs: JSON lines, each record with the battle it belongs to, from any logger."""
from __future__ import annotations

import json
import logging

import pytest

from arena.logs import JsonFormatter, battle_context, install_record_factory
from arena.models import Battle, Generation
from arena.services.battles import battle_start, turn_submit
from arena.services.generation import generation_run
from workers.emulator.config import Fault


def test_records_carry_the_battle_of_their_context_and_format_as_json():
    install_record_factory()
    logger = logging.getLogger("tests.ops.logs")
    with battle_context("6f1c2d"):
        inside = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "side %s failed", ("a",), None)
    outside = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "idle", (), None)
    line = json.loads(JsonFormatter().format(inside))
    assert line["battle"] == "6f1c2d" and line["message"] == "side a failed" and line["level"] == "WARNING"
    assert json.loads(JsonFormatter().format(outside))["battle"] == ""


def test_the_production_settings_log_json(settings):
    handler = settings.LOGGING["handlers"]["console"]
    assert not settings.EMBEDDED and handler["formatter"] == "json"
    assert settings.LOGGING["formatters"]["json"]["()"] == "arena.logs.JsonFormatter"


@pytest.mark.django_db
def test_a_failing_generation_logs_with_its_battle_id_and_no_contender_name(make_contender, emulator_faults,
                                                                            django_user_model, caplog,
                                                                            django_capture_on_commit_callbacks):
    make_contender("fault-target", "openai", display_name="Secret Contender")
    make_contender("test-quick-1b", "openai")
    emulator_faults.set_fault("fault-target", Fault(kind="500"))
    rater = django_user_model.objects.create_user("log-rater", password="pw-log-1234")
    battle = battle_start(rater=rater)
    with django_capture_on_commit_callbacks(execute=False):
        turn_submit(battle=battle, rater=rater, prompt="Hello?")
    target = Generation.objects.get(turn__battle=battle, contender__display_name="Secret Contender")
    with caplog.at_level(logging.INFO):
        generation_run(generation_id=target.pk)
    failures = [r for r in caplog.records if r.name == "arena.services.generation" and "failed" in r.getMessage()]
    assert failures and all(r.battle == str(battle.public_id) for r in failures)
    assert all("Secret Contender" not in JsonFormatter().format(r) for r in caplog.records)
    assert Battle.objects.get(pk=battle.pk).status == "failed"
