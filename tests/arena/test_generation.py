"""One side's generation, run through the task code against the emulator."""
from __future__ import annotations

import pytest

from arena.models import Battle, BattleStatus, Generation, GenerationStatus
from arena.services.battles import battle_start, turn_submit
from arena.services.generation import FAILED_SIDE_MESSAGE, generation_run
from workers.emulator import Fault
from workers.tasks import generate

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def rater(django_user_model):
    return django_user_model.objects.create_user("rater-g", password="pw-rater-123")


def start_with_turn(rater, prompt="Explain tea."):
    battle = battle_start(rater=rater)
    turn_submit(battle=battle, rater=rater, prompt=prompt)
    return battle


@pytest.fixture
def in_process_off(monkeypatch):
    # The tests run the task body by hand instead of letting the commit hook enqueue it.
    monkeypatch.setattr("workers.dispatch.enqueue", lambda task, *args, **kwargs: None)


def test_both_sides_finish_with_text_and_speed(rater, make_contender, in_process_off):
    make_contender("demo-terse-7b", "tgi")
    make_contender("demo-markdown-13b", "ollama")
    battle = start_with_turn(rater)
    for generation in Generation.objects.filter(turn__battle=battle):
        generate(generation.pk)  # the Celery task body, run in-process
    for generation in Generation.objects.filter(turn__battle=battle):
        assert generation.status == GenerationStatus.DONE
        assert generation.text.strip()
        assert generation.output_tokens and generation.time_to_first_token_ms is not None
    # A repeated or late task is harmless.
    first = Generation.objects.filter(turn__battle=battle).first()
    generation_run(generation_id=first.pk)
    assert Generation.objects.get(pk=first.pk).attempts == 1


def test_the_claim_loads_what_the_orm_would_and_claims_once(rater, make_contender, in_process_off):
    """The written-out claim (arena.services.generation_sql) against the ORM's own read, on PostgreSQL."""
    from arena.services.generation import _claim

    make_contender("demo-terse-7b", "tgi")
    make_contender("demo-markdown-13b", "ollama")
    battle = start_with_turn(rater)
    queued = Generation.objects.filter(turn__battle=battle).first()
    loaded = Generation.objects.select_related("turn__battle", "contender__server", "contender__preset").get(
        pk=queued.pk)

    def parts(generation):
        return [generation.turn, generation.turn.battle, generation.contender, generation.contender.server,
                generation.contender.preset]

    def values(obj):
        return [getattr(obj, field.attname) for field in type(obj)._meta.concrete_fields]

    claimed = _claim(queued.pk)
    assert [values(a) for a in parts(claimed)] == [values(b) for b in parts(loaded)]
    assert claimed.contender.endpoint() == loaded.contender.endpoint()
    assert claimed.decoding_params == loaded.decoding_params and claimed.decoding_params
    stored = Generation.objects.get(pk=queued.pk)
    assert (stored.status, stored.attempts, stored.started_at, stored.deadline_at) == (
        GenerationStatus.STREAMING, 1, claimed.started_at, claimed.deadline_at)
    assert claimed.deadline_at > claimed.started_at
    assert _claim(queued.pk) is None  # claimed already: a second run leaves it alone
    assert Generation.objects.get(pk=queued.pk).attempts == 1


def test_second_turn_sends_each_side_its_own_history(rater, make_contender, emulator, in_process_off):
    make_contender("demo-terse-7b", "openai")
    make_contender("demo-coder-34b", "openai")
    battle = start_with_turn(rater, "First question")
    for generation in Generation.objects.filter(turn__battle=battle):
        generate(generation.pk)
    answers = dict(Generation.objects.filter(turn__battle=battle).values_list("side", "text"))
    turn_submit(battle=battle, rater=rater, prompt="Second question")
    before = len(emulator.request_log)
    second = Generation.objects.get(turn__battle=battle, turn__index=2, side="a")
    generate(second.pk)
    bodies = [body for _, path, body in emulator.request_log[before:] if path.endswith("/chat/completions")]
    messages = bodies[-1]["messages"]
    assert [m["role"] for m in messages][-3:] == ["user", "assistant", "user"]
    assert messages[-2]["content"] == answers["a"]
    assert messages[-1]["content"] == "Second question"


def test_failed_side_fails_the_battle_without_leaking_details(rater, make_contender, emulator, in_process_off):
    make_contender("fault-target", "ollama")
    make_contender("demo-terse-7b", "ollama")
    emulator.set_fault("fault-target", Fault(kind="error_mid_stream", after_tokens=2))
    battle = start_with_turn(rater)
    for generation in Generation.objects.filter(turn__battle=battle):
        generate(generation.pk)
    failed = Generation.objects.get(turn__battle=battle, contender__backend_model_id="fault-target")
    assert failed.status == GenerationStatus.FAILED and failed.error_message
    assert Battle.objects.get(pk=battle.pk).status == BattleStatus.FAILED
    assert "fault-target" not in FAILED_SIDE_MESSAGE


def test_a_streaming_side_holds_no_pooled_connection_between_its_queries(rater, make_contender, in_process_off,
                                                                          monkeypatch):
    """With the pool (the PostgreSQL default), the stream itself runs without a database connection."""
    from django.db import connection

    from arena.services import generation as generation_service

    assert getattr(connection, "pool", None) is not None, "the test database is expected to use the pool"
    make_contender("demo-terse-7b", "tgi")
    make_contender("demo-markdown-13b", "ollama")
    battle = start_with_turn(rater)
    held: list[bool] = []
    monkeypatch.setattr(generation_service, "STOP_CHECK_INTERVAL_S", 0.0)  # a stop check after every delta
    original_add = generation_service.GenerationPublisher.add

    def add(self, text):
        held.append(connection.connection is not None)  # what the thread holds while it reads the stream
        original_add(self, text)

    monkeypatch.setattr(generation_service.GenerationPublisher, "add", add)
    for generation in Generation.objects.filter(turn__battle=battle):
        connection.close()
        generate(generation.pk)
    assert held and not any(held)
    assert set(Generation.objects.filter(turn__battle=battle).values_list("status", flat=True)) == {
        GenerationStatus.DONE}


def test_every_text_delta_is_sent_before_the_answer_is_stored_as_done(rater, make_contender, in_process_off,
                                                                       monkeypatch):
    """Otherwise the other side could announce "ready" while this side's last text is still on its way."""
    import arena.services.generation as generation_service
    import workers.streaming as streaming

    make_contender("demo-terse-7b", "tgi")
    make_contender("demo-markdown-13b", "ollama")
    battle = start_with_turn(rater)
    seen: list[tuple[str, int]] = []  # in the order it happened, on whichever thread
    original_send, original_store = streaming.group_send_nowait, generation_service._store_finished

    def recording(group, event, record=None):
        if event["type"] in ("generation.delta", "generation.done"):
            seen.append((event["type"], event["generation"]))
        return original_send(group, event, record=record)

    def storing(generation, text, finish):
        stored = original_store(generation, text, finish)
        seen.append(("stored", generation.pk))
        return stored

    monkeypatch.setattr(streaming, "group_send_nowait", recording)
    monkeypatch.setattr(generation_service, "_store_finished", storing)
    for generation in Generation.objects.filter(turn__battle=battle):
        generate(generation.pk)
    for pk in Generation.objects.filter(turn__battle=battle).values_list("pk", flat=True):
        order = [kind for kind, generation_id in seen if generation_id == pk]
        assert order.count("stored") == 1 and order[-2:] == ["stored", "generation.done"]
        assert set(order[:-2]) == {"generation.delta"}
    assert set(Generation.objects.filter(turn__battle=battle).values_list("status", flat=True)) == {
        GenerationStatus.DONE}


def test_one_status_query_per_interval_serves_every_stream_of_the_process(rater, make_contender, in_process_off):
    """The stop check is shared: many streams, one query; a stop reaches only its own stream."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from arena.services.generation import _Halted, _StopWatch

    make_contender("demo-terse-7b", "tgi")
    make_contender("demo-markdown-13b", "ollama")
    battles = [start_with_turn(rater, prompt=f"Explain tea, part {i}.") for i in range(3)]
    ids = list(Generation.objects.filter(turn__battle__in=battles).values_list("pk", flat=True))
    Generation.objects.filter(pk__in=ids).update(status=GenerationStatus.STREAMING)
    watches = [_StopWatch(pk) for pk in ids]
    for watch in watches:
        watch.__enter__()
    try:
        with CaptureQueriesContext(connection) as queries:
            for _round in range(20):
                for watch in watches:
                    watch.check()  # none stopped: nothing raised
        assert len(queries) <= 1  # one poll (if due) for six streams and 120 checks

        from arena.services import generation as generation_service

        stopped, replaced = ids[0], ids[1]
        Generation.objects.filter(pk=stopped).update(status=GenerationStatus.STOPPED)
        Generation.objects.filter(pk=replaced).delete()
        generation_service._streaming_here._next_poll = float("-inf")  # the next check polls
        halted = []
        for watch in watches:
            try:
                watch.check()
            except _Halted:
                halted.append(watch.generation_id)
        assert sorted(halted) == sorted([stopped, replaced])
    finally:
        for watch in watches:
            watch.__exit__(None, None, None)
    # A stream that ended leaves nothing behind: the same id streamed again is not seen as halted.
    again = _StopWatch(ids[0])
    with again:
        Generation.objects.filter(pk=ids[0]).update(status=GenerationStatus.STREAMING)
        assert not generation_service._streaming_here.halted(ids[0])
