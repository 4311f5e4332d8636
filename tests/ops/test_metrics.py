"""/metrics: who may read it, and what a real battle through the consumer adds to it."""
from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from arena.models import Battle, Vote
from tests.arena.test_battle_consumer import communicator_for, until
from tests.ops.conftest import sample_values, value

pytestmark = pytest.mark.django_db(transaction=True)


def scrape(client, **headers) -> dict:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/plain")
    return sample_values(response.content.decode())


def test_metrics_are_refused_to_anonymous_users_and_raters(client, rater_user):
    assert client.get("/metrics").status_code == 403
    client.force_login(rater_user)
    response = client.get("/metrics")
    assert response.status_code == 403
    assert b"arena_" not in response.content


def test_staff_users_read_metrics(client, staff_user):
    client.force_login(staff_user)
    samples = scrape(client)
    assert any(name.startswith("arena_") for name, _ in samples)


def test_bearer_token_reads_metrics_only_when_configured_and_right(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403
    settings.METRICS_TOKEN = "scrape-token-4f9a"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong-token").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="scrape-token-4f9a").status_code == 403
    scrape(client, HTTP_AUTHORIZATION="Bearer scrape-token-4f9a")


def test_requests_are_counted_by_view_and_status(client, staff_user):
    client.force_login(staff_user)
    before = scrape(client)
    assert client.get("/healthz").status_code == 200
    assert client.get("/no/such/page/").status_code == 404
    after = scrape(client)
    name = "arena_http_requests_total"
    assert value(after, name, view="healthz", status="200", method="GET") == \
        value(before, name, view="healthz", status="200", method="GET") + 1
    assert value(after, name, view="<unmatched>", status="404") == value(before, name, view="<unmatched>", status="404") + 1
    # The first scrape itself was counted once it had answered.
    assert value(after, name, view="metrics", status="200") == value(before, name, view="metrics", status="200") + 1


def test_a_battle_through_the_consumer_shows_in_the_metrics(client, staff_user, rater_user, make_contender,
                                                           settings):
    settings.GENERATION_IN_PROCESS = True  # the same task code, in this process's thread pool
    contenders = [make_contender("demo-terse-7b", "tgi"), make_contender("demo-markdown-13b", "ollama")]
    servers = [c.server.name for c in contenders]
    client.force_login(staff_user)
    before = scrape(client)

    def open_sockets() -> float:
        return REGISTRY.get_sample_value("arena_websockets_open", {"consumer": "BattleConsumer"}) or 0.0

    async def scenario():
        idle = open_sockets()
        ws = communicator_for(rater_user)
        assert (await ws.connect())[0]
        during = open_sockets()
        await ws.send_json_to({"type": "prompt", "text": "Tell me about tea."})
        await until(ws, {"ready"})
        await ws.send_json_to({"type": "vote", "winner": "model_a"})
        await until(ws, {"reveal"})
        await ws.disconnect()
        return idle, during

    idle, during = asyncio.run(scenario())
    assert during == idle + 1
    assert open_sockets() == idle
    assert Vote.objects.filter(battle__in=Battle.objects.filter(rater=rater_user)).count() == 1

    response = client.get("/metrics")
    text = response.content.decode()
    after = sample_values(text)
    assert value(after, "arena_votes_total", winner="model_a") == value(before, "arena_votes_total", winner="model_a") + 1
    for server in servers:
        for name in ("arena_generations_total",):
            assert value(after, name, server=server, outcome="done") == value(before, name, server=server,
                                                                              outcome="done") + 1
        assert value(after, "arena_generations_total", server=server, outcome="failed") == 0
        for histogram in ("arena_time_to_first_token_seconds", "arena_time_per_output_token_seconds"):
            assert value(after, f"{histogram}_count", server=server) == value(before, f"{histogram}_count",
                                                                              server=server) + 1
        assert value(after, "arena_time_to_first_token_seconds_sum", server=server) > 0
    # Server names may show (admins only); the names raters vote on never do.
    for contender in contenders:
        assert contender.display_name not in text


def test_a_failed_generation_is_counted_as_failed(client, staff_user, rater_user, make_contender, settings):
    from arena.services.battles import battle_start, turn_submit

    settings.GENERATION_IN_PROCESS = True
    settings.GENERATION_MAX_ATTEMPTS = 1
    contenders = [make_contender("demo-terse-7b", "tgi"), make_contender("demo-coder-34b", "openai")]
    for contender in contenders:
        contender.server.base_url = "http://127.0.0.1:9"  # nothing listens on the discard port
        contender.server.save()
    client.force_login(staff_user)
    before = scrape(client)
    battle = battle_start(rater=rater_user)
    turn_submit(battle=battle, rater=rater_user, prompt="Hello?")
    _wait_for(lambda: not battle.turns.get().generations.exclude(status="failed").exists())
    after = scrape(client)
    for contender in contenders:
        server = contender.server.name
        assert value(after, "arena_generations_total", server=server, outcome="failed") == \
            value(before, "arena_generations_total", server=server, outcome="failed") + 1
        assert value(after, "arena_time_to_first_token_seconds_count", server=server) == \
            value(before, "arena_time_to_first_token_seconds_count", server=server)


def test_celery_queue_depth_is_read_from_redis_when_scraped(client, staff_user, redis_client):
    from workers.tasks import generate

    client.force_login(staff_user)
    assert value(scrape(client), "arena_celery_queue_length", queue="celery") == 0
    for _ in range(3):
        generate.apply_async(args=[0])  # no worker runs here: the messages wait in the queue
    assert redis_client.llen("celery") == 3
    assert value(scrape(client), "arena_celery_queue_length", queue="celery") == 3
    # Refreshes wait in their own queue, counted on their own.
    from leaderboard.tasks import refresh

    assert value(scrape(client), "arena_celery_queue_length", queue="ratings") == 0
    refresh.apply_async()
    assert value(scrape(client), "arena_celery_queue_length", queue="ratings") == 1
    assert value(scrape(client), "arena_celery_queue_length", queue="celery") == 3


def _wait_for(condition, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_several_processes_answer_as_one_in_multiprocess_mode(tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR, a scrape served by any process sums what every process counted."""
    import subprocess
    import sys

    from tests.fixtures.services import REPO_ROOT

    env = {"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    record = ("from arena import metrics; metrics.record_vote(winner='tie'); "
              "metrics.record_generation(server='gpu1-tgi', outcome='done', ttft_ms=120.0, tpot_ms=20.0)")
    for _ in range(2):
        subprocess.run([sys.executable, "-c", record], env=env, check=True, timeout=60)
    scrape = ("from prometheus_client import generate_latest; from arena import metrics; "
              "print(generate_latest(metrics.scrape_registry(include_queue=False)).decode())")
    text = subprocess.run([sys.executable, "-c", scrape], env=env, check=True, timeout=60, capture_output=True,
                          text=True).stdout
    samples = sample_values(text)
    assert value(samples, "arena_votes_total", winner="tie") == 2
    assert value(samples, "arena_generations_total", server="gpu1-tgi", outcome="done") == 2
    assert value(samples, "arena_time_to_first_token_seconds_count", server="gpu1-tgi") == 2
    assert value(samples, "arena_time_to_first_token_seconds_bucket", server="gpu1-tgi", le="0.25") == 2
