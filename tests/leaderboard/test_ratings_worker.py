"""The production split: a streaming worker (threads, queue "celery") never runs a refresh; the
ratings worker (one thread, queue "ratings", categories rated by a pool of processes) does."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from leaderboard.models import RatingSnapshot
from tests.fixtures.services import start_celery_worker, stop_process, subprocess_env
from tests.leaderboard.test_vote_hook import play_and_vote, quick_refresh, wait_for  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def split_workers(require_postgres, require_redis, quick_refresh):  # noqa: F811 (fixture)
    streaming, streaming_log = start_celery_worker(subprocess_env(), name="streaming", queues="celery")
    try:
        ratings, ratings_log = start_celery_worker(subprocess_env(LEADERBOARD_RATING_PROCESSES="2"), name="ratings",
                                                   concurrency=1, queues="ratings")
    except Exception:
        stop_process(streaming)
        raise
    yield streaming_log, ratings_log
    stop_process(ratings)
    stop_process(streaming)


def test_refreshes_run_in_the_ratings_worker_and_its_pool_not_among_the_streams(
        split_workers, redis_client, emulator, make_contender, django_user_model):
    streaming_log, ratings_log = split_workers
    make_contender("demo-terse-7b", "tgi", display_name="tea-one")
    make_contender("test-quick-1b", "openai", display_name="tea-two")
    rater = django_user_model.objects.create_user("split-rater", password="pw-split-123")
    rater.groups.add(Group.objects.get_or_create(name="rater")[0])

    battle = play_and_vote(rater, "model_b")  # streamed by the streaming worker
    try:
        snapshot = wait_for(lambda: RatingSnapshot.objects.filter(category="overall", style_control=False).first(),
                            timeout=60, what="a snapshot written by the ratings worker")
    except AssertionError as error:
        raise AssertionError(f"{error}\nratings worker log:\n{ratings_log.read_text()[-4000:]}") from None
    assert snapshot.battles == 1
    assert {row.model_name for row in snapshot.rows.all()} == {battle.model_a.display_name,
                                                               battle.model_b.display_name}
    streamed, rated = streaming_log.read_text(), ratings_log.read_text()
    # Tasks each worker received (its start-up banner lists every registered task).
    assert "Task arena.generate[" in streamed and "Task leaderboard.refresh[" not in streamed
    assert "Task leaderboard.refresh[" in rated and "Task arena.generate[" not in rated
    assert "rating pool: 2 processes ready" in rated and "rating pool" not in streamed  # started when ready
    assert "not available" not in rated and "broke" not in rated  # nothing fell back to the worker's process
