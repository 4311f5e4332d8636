"""Leaderboard pages and API for each role, their content, sorting, filters, permalinks and charts."""
from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from arena.roles import VIEWER
from leaderboard.models import RatingSnapshot
from leaderboard.selectors import snapshot_latest
from leaderboard.services import leaderboard_refresh
from tests.leaderboard.conftest import simulate_votes
from tests.leaderboard.test_snapshots import (  # noqa: F401 (arena and quick are fixtures)
    BASE_TIME, STRENGTHS, arena, markdown_answer, quick,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("require_postgres")]


@pytest.fixture
def board(arena, quick):
    """Four contenders with metadata, votes, generations with timings, and one refresh."""
    arena.contender("alpha", organisation="Acme", licence="apache-2.0", commercial_use=True,
                    parameter_count_b=Decimal("7"), flavour="chat", context_length=8192)
    arena.contender("beta", organisation="Bell", licence="llama3", commercial_use=False,
                    parameter_count_b=Decimal("70"), flavour="instruct", context_length=131072)
    arena.contender("gamma", organisation="Cobalt", licence="apache-2.0", commercial_use=True,
                    parameter_count_b=Decimal("13"), flavour="chat")
    arena.contender("delta")
    quick.LEADERBOARD_STYLE_CONTROL = True
    quick.LEADERBOARD_STYLE_REFRESH_SECONDS = 0  # style control inline, with the plain ratings
    quick.LEADERBOARD_STYLE_BOOTSTRAP_ROUNDS = 0
    arena.votes(simulate_votes(STRENGTHS, 400, seed=5), rater=arena.user("voter"), answers=markdown_answer)
    # Few votes for a newcomer: provisional.
    arena.votes([("epsilon", "alpha", "model_b"), ("epsilon", "beta", "model_a")], rater=arena.user("voter2"),
                start=BASE_TIME + timedelta(days=1))
    leaderboard_refresh()
    return arena


def login(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def viewer_client(client, board):
    return login(client, board.user("pm", role=VIEWER))


PAGES = [
    ("leaderboard:board", []), ("leaderboard:snapshots", []), ("leaderboard:board-json", []),
    ("leaderboard:board-csv", []), ("leaderboard:history-json", []), ("leaderboard:model", ["alpha"]),
    ("leaderboard:model-json", ["alpha"]), ("leaderboard:plotly-js", []),
]


def all_urls():
    overall = snapshot_latest(category="overall")
    urls = [reverse(name, args=args) for name, args in PAGES]
    urls += [reverse(name, args=[overall.pk])
             for name in ("leaderboard:snapshot", "leaderboard:snapshot-json", "leaderboard:snapshot-csv")]
    return urls


def test_viewers_and_admins_see_everything_raters_get_403_anonymous_users_log_in(client, board, django_user_model):
    urls = all_urls()
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
    login(client, board.user("rater-only"))
    for url in urls:
        assert client.get(url).status_code == 403, url
    login(client, board.user("pm", role=VIEWER))
    for url in urls:
        assert client.get(url).status_code == 200, url
        assert client.post(url).status_code == 405, url  # GET only
    login(client, board.user("boss", role=None, is_staff=True))
    for url in urls:
        assert client.get(url).status_code == 200, url


def test_table_shows_ratings_metadata_and_speed(viewer_client, board):
    response = viewer_client.get(reverse("leaderboard:board"))
    html = response.content.decode()
    table = response.context["data"]["models"]
    established = [row["model"] for row in table if not row["provisional"]]
    assert established == ["alpha", "beta", "gamma", "delta"] and len(table) == 5
    alpha = table[0]
    assert (alpha["organisation"], alpha["licence"], alpha["commercial_use"], alpha["parameter_count_b"],
            alpha["flavour"], alpha["context_length"]) == ("Acme", "apache-2.0", True, 7.0, "chat", 8192)
    # Each stored generation of alpha took 100 ms + its id to the first token and 20 ms per token.
    assert alpha["median_ttft_ms"] == pytest.approx(100.0 + board.contenders["alpha"].pk)
    assert alpha["median_tpot_ms"] == pytest.approx(20.0)
    assert alpha["ci_plus"] > 0 and alpha["ci_minus"] > 0
    epsilon = next(row for row in table if row["model"] == "epsilon")
    assert epsilon["provisional"] and epsilon["votes"] == 2 and epsilon["organisation"] == ""
    for text in ("Rank (UB)", "Acme", "apache-2.0", "chart-scores", "chart-win-fraction", "chart-battle-counts",
                 "chart-history", "/leaderboard/plotly.min.js?v=", "leaderboard-charts"):
        assert text in html
    assert "cdn" not in html.lower()


def test_speed_covers_recent_answers_only(viewer_client, board, settings):
    settings.LEADERBOARD_SPEED_WINDOW_DAYS = 30
    board.votes([("alpha", "beta", "model_a")] * 3, rater=board.user("now"), start=timezone.now())
    leaderboard_refresh(categories=["overall"])
    rows = {row["model"]: row for row in viewer_client.get(reverse("leaderboard:board-json")).json()["models"]}
    assert rows["alpha"]["median_ttft_ms"] == pytest.approx(100.0 + board.contenders["alpha"].pk)
    assert rows["gamma"]["median_ttft_ms"] is None  # its answers are all older than 30 days
    old = viewer_client.get(reverse("leaderboard:snapshot-json",
                                    args=[RatingSnapshot.objects.filter(category="overall").order_by("id").first().pk]))
    assert old.json()["models"][0]["median_ttft_ms"] is not None  # a permalink keeps the speed of its day


def table_models(client, **params) -> list[str]:
    response = client.get(reverse("leaderboard:board-json"), params)
    assert response.status_code == 200
    return [row["model"] for row in response.json()["models"]]


def test_sorting_and_filters(viewer_client, board):
    assert table_models(viewer_client, sort="model", dir="asc") == ["alpha", "beta", "delta", "epsilon", "gamma"]
    assert table_models(viewer_client, sort="model", dir="desc") == ["gamma", "epsilon", "delta", "beta", "alpha"]
    assert table_models(viewer_client, sort="size")[:3] == ["alpha", "gamma", "beta"]  # unknown sizes last
    assert table_models(viewer_client, sort="votes")[-1] == "epsilon"
    assert table_models(viewer_client, licence="apache-2.0") == ["alpha", "gamma"]
    assert set(table_models(viewer_client, commercial="no")) == {"epsilon", "beta", "delta"}
    assert table_models(viewer_client, size="large") == ["beta"]
    assert set(table_models(viewer_client, size="unknown")) == {"delta", "epsilon"}
    assert table_models(viewer_client, flavour="instruct") == ["beta"]
    assert "epsilon" not in table_models(viewer_client, provisional="0")
    page = viewer_client.get(reverse("leaderboard:board"), {"sort": "model", "dir": "asc"}).content.decode()
    assert "sort=model&amp;dir=desc" in page  # clicking the sorted column flips it
    assert viewer_client.get(reverse("leaderboard:board"), {"category": "../etc"}).status_code == 404


def test_json_and_csv_carry_the_snapshot(viewer_client, board):
    snapshot = snapshot_latest(category="overall")
    data = viewer_client.get(reverse("leaderboard:board-json")).json()
    assert data["snapshot"]["id"] == snapshot.pk and data["snapshot"]["votes"] == 402
    assert data["snapshot"]["permalink"].endswith(f"/leaderboard/snapshots/{snapshot.pk}/")
    by_name = {row.model_name: row for row in snapshot.rows.all()}
    for row in data["models"]:
        stored = by_name[row["model"]]
        assert (row["rating"], row["ci_lower"], row["ci_upper"], row["votes"], row["rank_ub"]) == (
            stored.rating, stored.ci_lower, stored.ci_upper, stored.votes, stored.rank_ub)

    response = viewer_client.get(reverse("leaderboard:board-csv"))
    assert response["Content-Type"].startswith("text/csv")
    assert f"leaderboard-overall-{snapshot.pk}.csv" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [r["model"] for r in rows] == [r["model"] for r in data["models"]]
    assert float(rows[0]["rating"]) == pytest.approx(data["models"][0]["rating"])
    assert rows[0]["licence"] == "apache-2.0" and rows[0]["commercial_use"] == "True"

    full = viewer_client.get(reverse("leaderboard:snapshot-json", args=[snapshot.pk])).json()
    assert full["matrices"]["names"] == [row["model"] for row in data["models"]]


def test_permalink_shows_an_older_snapshot_as_it_was(viewer_client, board):
    old = snapshot_latest(category="overall")
    old_ratings = {row.model_name: row.rating for row in old.rows.all()}
    board.votes([("delta", "alpha", "model_a")] * 60, rater=board.user("late"), start=BASE_TIME + timedelta(days=2))
    leaderboard_refresh(categories=["overall"])
    new = snapshot_latest(category="overall")
    assert new.pk != old.pk

    page = viewer_client.get(reverse("leaderboard:snapshot", args=[old.pk]))
    assert page.status_code == 200 and page.context["snapshot"] == old
    assert "the leaderboard as of snapshot" in page.content.decode()
    old_json = viewer_client.get(reverse("leaderboard:snapshot-json", args=[old.pk])).json()
    assert {row["model"]: row["rating"] for row in old_json["models"]} == old_ratings
    latest = viewer_client.get(reverse("leaderboard:board-json")).json()
    assert latest["snapshot"]["id"] == new.pk and latest["snapshot"]["votes"] == 462
    history = viewer_client.get(reverse("leaderboard:history-json")).json()["models"]
    assert [point["snapshot"] for point in history["alpha"]] == [old.pk, new.pk]
    assert viewer_client.get(reverse("leaderboard:snapshot", args=[999999])).status_code == 404
    listing = viewer_client.get(reverse("leaderboard:snapshots")).content.decode()
    assert reverse("leaderboard:snapshot", args=[old.pk]) in listing


def test_categories_and_style_control_switch_snapshots(viewer_client, board):
    styled = viewer_client.get(reverse("leaderboard:board-json"), {"style": "1"}).json()
    assert styled["snapshot"]["style_control"] is True
    assert set(styled["snapshot"]["style"]["coefficients"]) == {"length", "headers", "list_items", "bold"}
    assert "Style effects" in viewer_client.get(reverse("leaderboard:board"), {"style": "1"}).content.decode()
    english = viewer_client.get(reverse("leaderboard:board-json"), {"category": "lang-en"}).json()
    assert english["snapshot"]["category"] == "lang-en"
    missing = viewer_client.get(reverse("leaderboard:board-json"), {"category": "coding"})
    assert missing.status_code == 404 and "no leaderboard yet" in missing.json()["error"]
    page = viewer_client.get(reverse("leaderboard:board"), {"category": "coding"})
    assert page.status_code == 200 and "No leaderboard yet" in page.content.decode()


def test_model_page_has_matchups_speed_and_history(viewer_client, board):
    response = viewer_client.get(reverse("leaderboard:model", args=["alpha"]))
    assert response.status_code == 200
    data = response.context["data"]
    assert {m["opponent"] for m in data["matchups"]} == {"beta", "gamma", "delta", "epsilon"}
    assert sum(m["battles"] for m in data["matchups"]) == snapshot_latest(category="overall").rows.get(
        model_name="alpha").votes
    assert data["speed"]["median_ttft_ms"] == pytest.approx(100.0 + board.contenders["alpha"].pk)
    assert data["speed"]["answers"] > 0 and len(data["history"]) == 1
    assert {(c["category"], c["style_control"]) for c in data["categories"]} >= {("overall", False),
                                                                                  ("overall", True)}
    html = response.content.decode()
    for text in ("Acme", "chart-matchups", "chart-speed", "chart-model-history", "model-charts"):
        assert text in html
    api = viewer_client.get(reverse("leaderboard:model-json", args=["alpha"])).json()
    assert api["contender"]["organisation"] == "Acme" and api["matchups"] == data["matchups"]
    assert viewer_client.get(reverse("leaderboard:model", args=["nobody"])).status_code == 404


def test_models_with_slashes_in_their_names_have_pages(viewer_client, board):
    board.votes([("org/model-7b", "alpha", "model_a"), ("alpha", "org/model-7b", "tie")],
                rater=board.user("r9"), start=BASE_TIME + timedelta(days=3))
    leaderboard_refresh(categories=["overall"])
    url = reverse("leaderboard:model", args=["org/model-7b"])
    assert url == "/leaderboard/models/org/model-7b/"
    assert viewer_client.get(url).status_code == 200
    assert viewer_client.get(reverse("leaderboard:model-json", args=["org/model-7b"])).json()["model"] == "org/model-7b"


def test_plotly_is_served_from_the_installed_package_with_long_cache(viewer_client, board):
    import plotly

    response = viewer_client.get(reverse("leaderboard:plotly-js"), {"v": plotly.__version__})
    body = b"".join(response.streaming_content)
    assert response["Content-Type"].startswith("text/javascript")
    assert "max-age=31536000" in response["Cache-Control"] and "private" in response["Cache-Control"]
    assert len(body) > 1_000_000 and body.startswith(b"/**\n* plotly.js v")


def test_the_snapshot_admin_warns_when_no_worker_takes_the_ratings_queue(client, board, redis_client):
    from leaderboard.tasks import refresh

    login(client, board.user("boss", role=None, is_staff=True, is_superuser=True))
    changelist = reverse("admin:leaderboard_ratingsnapshot_changelist")
    assert "no worker seems to take it" not in client.get(changelist).content.decode()
    refresh.apply_async()
    assert "no worker seems to take it" not in client.get(changelist).content.decode()  # one may be on its way
    refresh.apply_async()  # nothing here takes the queue: the refreshes pile up
    page = client.get(changelist).content.decode()
    assert "2 leaderboard refreshes are waiting" in page and "celery -A workers worker -Q ratings" in page


def test_admin_can_start_a_refresh(client, board, redis_client):
    login(client, board.user("boss", role=None, is_staff=True, is_superuser=True))
    changelist = reverse("admin:leaderboard_ratingsnapshot_changelist")
    page = client.get(changelist)
    assert page.status_code == 200 and "Refresh leaderboard now" in page.content.decode()
    queued = redis_client.llen("ratings")  # the refresh goes to the ratings worker's queue
    response = client.post(reverse("admin:leaderboard_ratingsnapshot_refresh"))
    assert response.status_code == 302 and response["Location"] == changelist
    assert redis_client.llen("ratings") == queued + 1
    assert client.get(reverse("admin:leaderboard_ratingsnapshot_refresh")).status_code == 405
    snapshot = RatingSnapshot.objects.first()
    assert client.get(reverse("admin:leaderboard_ratingsnapshot_change", args=[snapshot.pk])).status_code == 200
