"""Leaderboard pages and their JSON/CSV twins, for viewers and admins.

Raters get 403: seeing which models lead while still voting would bias their votes. Every view
needs a login (anonymous users go to the login page) and answers GET only.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import wraps
from pathlib import Path

import plotly
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from arena.roles import ADMIN, VIEWER, user_roles
from leaderboard import categories as cats
from leaderboard import selectors
from leaderboard.models import RatingSnapshot

PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
PLOTLY_VERSION = plotly.__version__

CSV_COLUMNS = (
    "rank_ub", "model", "rating", "ci_lower", "ci_upper", "ci_plus", "ci_minus", "votes", "win_rate", "elo",
    "provisional", "organisation", "licence", "commercial_use", "parameter_count_b", "flavour", "context_length",
    "median_ttft_ms", "median_tpot_ms",
)


def viewer_required(view):
    """Viewers and admins; raters and anyone else get 403, anonymous users the login page."""

    @login_required
    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs):
        if not user_roles(request.user) & {VIEWER, ADMIN}:
            raise PermissionDenied("The leaderboard is for viewers and admins.")
        return view(request, *args, **kwargs)

    return wrapped


@dataclass(frozen=True)
class BoardQuery:
    category: str
    style_control: bool
    filters: selectors.TableFilters
    sort: str
    descending: bool | None


def _board_query(request: HttpRequest) -> BoardQuery:
    get = request.GET
    category = get.get("category") or cats.OVERALL
    if not cats.is_valid_category(category):
        raise Http404("Unknown category.")
    sort = get.get("sort") or "rating"
    if sort not in selectors.SORT_KEYS:
        sort = "rating"
    direction = get.get("dir")
    commercial = get.get("commercial", "")
    size = get.get("size", "")
    return BoardQuery(
        category=category, style_control=get.get("style") in {"1", "on", "true"},
        filters=selectors.TableFilters(
            licence=get.get("licence", ""), commercial=commercial if commercial in {"yes", "no"} else "",
            size=size if size in {key for key, *_ in selectors.SIZE_BUCKETS} else "",
            flavour=get.get("flavour", ""), show_provisional=get.get("provisional", "1") not in {"0", "off", "false"},
        ),
        sort=sort, descending={"asc": False, "desc": True}.get(direction),
    )


def _snapshot_data(request: HttpRequest, snapshot: RatingSnapshot, query: BoardQuery) -> dict:
    table = selectors.snapshot_table(snapshot=snapshot, filters=query.filters, sort=query.sort,
                                     descending=query.descending)
    summary = selectors.snapshot_summary(snapshot=snapshot)
    summary["permalink"] = request.build_absolute_uri(reverse("leaderboard:snapshot", args=[snapshot.pk]))
    return {"snapshot": summary, "models": table}


def _latest_or_none(query: BoardQuery) -> RatingSnapshot | None:
    return selectors.snapshot_latest(category=query.category, style_control=query.style_control)


def _snapshot_or_404(snapshot_id: int) -> RatingSnapshot:
    snapshot = selectors.snapshot_get(snapshot_id=snapshot_id)
    if snapshot is None:
        raise Http404("No such snapshot.")
    return snapshot


def _render_board(request: HttpRequest, snapshot: RatingSnapshot | None, query: BoardQuery, *,
                  permalink: bool) -> HttpResponse:
    data = _snapshot_data(request, snapshot, query) if snapshot else None
    charts = None
    if snapshot:
        charts = {
            "models": data["models"], "matrices": selectors.snapshot_matrices(snapshot=snapshot),
            "history": selectors.score_history(category=snapshot.category, style_control=snapshot.style_control),
        }
    return render(request, "leaderboard/board.html", {
        "snapshot": snapshot, "data": data, "charts": charts, "query": query, "permalink": permalink,
        "categories": selectors.snapshot_categories() or [(cats.OVERALL, cats.category_label(cats.OVERALL))],
        "choices": selectors.filter_choices(),
        "sort_columns": _sort_columns(query), "plotly_version": PLOTLY_VERSION,
    })


_NUMERIC_COLUMNS = {"rank", "rating", "ci", "votes", "win_rate", "elo", "size", "context", "ttft", "tpot"}
_DESCENDING_FIRST = {"rating", "votes", "win_rate", "elo"}  # bigger is better: show the best first
_COLUMNS = [("rank", "Rank (UB)"), ("model", "Model"), ("rating", "Score"), ("ci", "95% CI"), ("votes", "Votes"),
            ("win_rate", "Win rate"), ("elo", "Elo"), ("organisation", "Organisation"), ("licence", "Licence"),
            (None, "Commercial use"), ("size", "Size"), ("flavour", "Flavour"), ("context", "Context"),
            ("ttft", "TTFT (ms)"), ("tpot", "TPOT (ms)")]


def _sort_columns(query: BoardQuery) -> list[dict]:
    """Header cells: clicking the sorted column flips its direction, any other sorts by it."""
    descending = query.descending if query.descending is not None else query.sort in _DESCENDING_FIRST
    columns = []
    for key, label in _COLUMNS:
        active = key == query.sort
        if active:
            next_dir, arrow = ("asc", "\u25bc") if descending else ("desc", "\u25b2")
        else:
            next_dir, arrow = ("desc" if key in _DESCENDING_FIRST else "asc"), ""
        columns.append({"key": key, "label": label, "numeric": key in _NUMERIC_COLUMNS, "next_dir": next_dir,
                        "arrow": arrow})
    return columns


@viewer_required
@require_GET
def board(request: HttpRequest) -> HttpResponse:
    query = _board_query(request)
    return _render_board(request, _latest_or_none(query), query, permalink=False)


@viewer_required
@require_GET
def snapshot_page(request: HttpRequest, snapshot_id: int) -> HttpResponse:
    snapshot = _snapshot_or_404(snapshot_id)
    query = _board_query(request)
    query = BoardQuery(category=snapshot.category, style_control=snapshot.style_control, filters=query.filters,
                       sort=query.sort, descending=query.descending)
    return _render_board(request, snapshot, query, permalink=True)


@viewer_required
@require_GET
def snapshot_list(request: HttpRequest) -> HttpResponse:
    category = request.GET.get("category") or None
    if category and not cats.is_valid_category(category):
        raise Http404("Unknown category.")
    return render(request, "leaderboard/snapshots.html", {
        "snapshots": selectors.snapshots_recent(category=category), "category": category,
        "categories": selectors.snapshot_categories(),
    })


def _no_snapshot(query: BoardQuery) -> JsonResponse:
    return JsonResponse({"error": f"no leaderboard yet for category {query.category!r}"
                                  + (" with style control" if query.style_control else "")}, status=404)


@viewer_required
@require_GET
def board_json(request: HttpRequest) -> JsonResponse:
    query = _board_query(request)
    snapshot = _latest_or_none(query)
    if snapshot is None:
        return _no_snapshot(query)
    return JsonResponse(_snapshot_data(request, snapshot, query))


@viewer_required
@require_GET
def snapshot_json(request: HttpRequest, snapshot_id: int) -> JsonResponse:
    snapshot = _snapshot_or_404(snapshot_id)
    data = _snapshot_data(request, snapshot, _board_query(request))
    data["matrices"] = selectors.snapshot_matrices(snapshot=snapshot)
    return JsonResponse(data)


def _csv_response(rows: list[dict], filename: str) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(["" if row[column] is None else row[column] for column in CSV_COLUMNS])
    return response


@viewer_required
@require_GET
def board_csv(request: HttpRequest) -> HttpResponse:
    query = _board_query(request)
    snapshot = _latest_or_none(query)
    if snapshot is None:
        return _no_snapshot(query)
    rows = _snapshot_data(request, snapshot, query)["models"]
    return _csv_response(rows, _csv_name(snapshot))


@viewer_required
@require_GET
def snapshot_csv(request: HttpRequest, snapshot_id: int) -> HttpResponse:
    snapshot = _snapshot_or_404(snapshot_id)
    rows = _snapshot_data(request, snapshot, _board_query(request))["models"]
    return _csv_response(rows, _csv_name(snapshot))


def _csv_name(snapshot: RatingSnapshot) -> str:
    style = "-style" if snapshot.style_control else ""
    return f"leaderboard-{snapshot.category}{style}-{snapshot.pk}.csv"


@viewer_required
@require_GET
def history_json(request: HttpRequest) -> JsonResponse:
    query = _board_query(request)
    return JsonResponse({"category": query.category, "style_control": query.style_control,
                         "models": selectors.score_history(category=query.category,
                                                           style_control=query.style_control)})


def _model_data(request: HttpRequest, model_name: str, category: str) -> dict:
    if not selectors.model_is_known(model_name=model_name):
        raise Http404("No such model.")
    contender = selectors.contender_by_name(model_name=model_name)
    snapshot = selectors.snapshot_latest(category=category)
    return {
        "model": model_name, "contender": selectors.contender_card(contender),
        "category": category, "category_label": cats.category_label(category),
        "snapshot": snapshot.pk if snapshot else None,
        "categories": selectors.model_categories(model_name=model_name),
        "matchups": selectors.model_matchups(snapshot=snapshot, model_name=model_name) if snapshot else [],
        "speed": selectors.model_speed(contender=contender),
        "history": selectors.score_history(category=category, model_name=model_name).get(model_name, []),
    }


def _model_category(request: HttpRequest) -> str:
    category = request.GET.get("category") or cats.OVERALL
    if not cats.is_valid_category(category):
        raise Http404("Unknown category.")
    return category


@viewer_required
@require_GET
def model_page(request: HttpRequest, model_name: str) -> HttpResponse:
    data = _model_data(request, model_name, _model_category(request))
    return render(request, "leaderboard/model.html", {"data": data, "plotly_version": PLOTLY_VERSION,
                                                      "categories": selectors.snapshot_categories()})


@viewer_required
@require_GET
def model_json(request: HttpRequest, model_name: str) -> JsonResponse:
    return JsonResponse(_model_data(request, model_name, _model_category(request)))


@viewer_required
@require_GET
def plotly_js(request: HttpRequest) -> FileResponse:
    """plotly.min.js from the installed plotly package (no CDN); cached for a year, the URL names the version."""
    response = FileResponse(open(PLOTLY_JS, "rb"), content_type="text/javascript; charset=utf-8")
    # private: the response sits behind a login, so shared caches must not keep it.
    response["Cache-Control"] = "private, max-age=31536000, immutable"
    return response
