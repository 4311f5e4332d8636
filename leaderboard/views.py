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
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from arena.roles import ADMIN, VIEWER, user_roles
from leaderboard import categories as cats
from leaderboard import selectors
from leaderboard.harness import services as harness_services
from leaderboard.models import IMPORTED_COLUMN_SET_KEY, RatingSnapshot

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
    preset: str = ""  # benchmark column set key, "" for none
    column_set: object = None  # the ColumnSet of ``preset``


BENCH_SORT_PREFIX = "bench:"


def _board_query(request: HttpRequest) -> BoardQuery:
    get = request.GET
    category = get.get("category") or cats.OVERALL
    if not cats.is_valid_category(category):
        raise Http404("Unknown category.")
    preset = get.get("preset") or ""
    column_set = None
    if preset:
        column_set = selectors.column_set_get(key=preset)
        if column_set is None:
            raise Http404("Unknown benchmark preset.")
    sort = get.get("sort") or "rating"
    bench_keys = {column["key"] for column in selectors.benchmark_header(column_set)} if column_set else set()
    if sort not in selectors.SORT_KEYS and sort.removeprefix(BENCH_SORT_PREFIX) not in bench_keys:
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
        sort=sort, descending={"asc": False, "desc": True}.get(direction), preset=preset, column_set=column_set,
    )


def _snapshot_data(request: HttpRequest, snapshot: RatingSnapshot, query: BoardQuery) -> dict:
    bench_sort = query.sort.startswith(BENCH_SORT_PREFIX)
    table = selectors.snapshot_table(snapshot=snapshot, filters=query.filters,
                                     sort="rating" if bench_sort else query.sort, descending=query.descending)
    summary = selectors.snapshot_summary(snapshot=snapshot)
    summary["permalink"] = request.build_absolute_uri(reverse("leaderboard:snapshot", args=[snapshot.pk]))
    data = {"snapshot": summary, "models": table}
    if query.column_set is not None:
        selectors.table_add_benchmarks(
            table=table, column_set=query.column_set,
            sort_key=query.sort.removeprefix(BENCH_SORT_PREFIX) if bench_sort else None,
            descending=query.descending is not False)
        data["preset"] = {"key": query.column_set.key, "label": query.column_set.label,
                          "description": query.column_set.description,
                          "columns": selectors.benchmark_header(query.column_set)}
    return data


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
    sort_columns, bench_columns = _sort_columns(query), _bench_columns(query)
    return render(request, "leaderboard/board.html", {
        "snapshot": snapshot, "data": data, "charts": charts, "query": query, "permalink": permalink,
        "categories": selectors.snapshot_categories() or [(cats.OVERALL, cats.category_label(cats.OVERALL))],
        "choices": selectors.filter_choices(), "presets": selectors.column_set_choices(),
        "sort_columns": sort_columns, "bench_columns": bench_columns,
        "table_width": len(sort_columns) + len(bench_columns), "plotly_version": PLOTLY_VERSION,
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


def _bench_columns(query: BoardQuery) -> list[dict]:
    """Header cells of the benchmark columns: bigger is better, so the first click sorts descending."""
    if query.column_set is None:
        return []
    columns = []
    for column in selectors.benchmark_header(query.column_set):
        key = BENCH_SORT_PREFIX + column["key"]
        active = key == query.sort
        descending = query.descending is not False
        next_dir, arrow = (("asc", "\u25bc") if descending else ("desc", "\u25b2")) if active else ("desc", "")
        columns.append(dict(column, sort=key, next_dir=next_dir, arrow=arrow))
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
                       sort=query.sort, descending=query.descending, preset=query.preset,
                       column_set=query.column_set)
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


def _csv_response(rows: list[dict], filename: str, bench_columns: list[dict] | None = None) -> HttpResponse:
    """One line per model; with a preset, three more cells per benchmark column: value, stderr, warnings."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    bench_columns = bench_columns or []
    bench_header = [name for column in bench_columns
                    for name in (column["key"], f"{column['key']}_stderr", f"{column['key']}_warnings")]
    writer.writerow([*CSV_COLUMNS, *bench_header])
    for row in rows:
        cells = ["" if row[column] is None else row[column] for column in CSV_COLUMNS]
        for cell in row.get("benchmarks", []) if bench_columns else []:
            warnings = [flag for flag in cell["flags"] if flag != "missing"]
            cells += ["" if cell["value"] is None else cell["value"],
                      "" if cell["stderr"] is None else cell["stderr"], ";".join(warnings)]
        writer.writerow([_csv_safe(cell) for cell in cells])
    return response


def _csv_safe(cell):
    # Names come from admins and results files: keep a spreadsheet from reading one as a formula.
    if isinstance(cell, str) and cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + cell
    return cell


@viewer_required
@require_GET
def board_csv(request: HttpRequest) -> HttpResponse:
    query = _board_query(request)
    snapshot = _latest_or_none(query)
    if snapshot is None:
        return _no_snapshot(query)
    data = _snapshot_data(request, snapshot, query)
    return _csv_response(data["models"], _csv_name(snapshot), data.get("preset", {}).get("columns"))


@viewer_required
@require_GET
def snapshot_csv(request: HttpRequest, snapshot_id: int) -> HttpResponse:
    snapshot = _snapshot_or_404(snapshot_id)
    data = _snapshot_data(request, snapshot, _board_query(request))
    return _csv_response(data["models"], _csv_name(snapshot), data.get("preset", {}).get("columns"))


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
        "harness_files": selectors.model_harness_files(contender=contender),
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


# --------------------------------------------------------------------------------------------------
# Which benchmarks predict human preference


def _correlation_data(request: HttpRequest) -> dict:
    preset = request.GET.get("preset") or IMPORTED_COLUMN_SET_KEY
    column_set = selectors.column_set_get(key=preset, allow_imported=True)
    if column_set is None and preset != IMPORTED_COLUMN_SET_KEY:
        raise Http404("Unknown benchmark preset.")
    min_votes = request.GET.get("min_votes") or None
    if min_votes is not None:
        if not min_votes.isdigit() or len(min_votes) > 9:
            raise Http404("min_votes must be a whole number.")
        min_votes = int(min_votes)
    data = selectors.benchmark_correlations(column_set=column_set, min_votes=min_votes)
    data["preset"] = preset
    return data


@viewer_required
@require_GET
def benchmarks_page(request: HttpRequest) -> HttpResponse:
    data = _correlation_data(request)
    presets = [(IMPORTED_COLUMN_SET_KEY, "Every imported benchmark (raw scores)"), *selectors.column_set_choices()]
    return render(request, "leaderboard/benchmarks.html", {"data": data, "presets": presets,
                                                           "plotly_version": PLOTLY_VERSION})


@viewer_required
@require_GET
def benchmarks_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_correlation_data(request))


# --------------------------------------------------------------------------------------------------
# Results files from CI pipelines

API_TOKEN_SCHEME = "bearer"
UPLOAD_FIELD = "file"


def _api_error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"ok": False, "error": message}, status=status)


def _api_user(request: HttpRequest):
    """(user, error response): a bearer token, or the session (then with the CSRF check a form gets)."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, key = header.partition(" ")
        if scheme.lower() != API_TOKEN_SCHEME or not key.strip():
            return None, _api_error("expected 'Authorization: Bearer <token>'", 401)
        user = harness_services.api_token_user(key=key.strip())
        if user is None:
            return None, _api_error("unknown or revoked token", 401)
        return user, None
    if not request.user.is_authenticated:
        return None, _api_error("authentication required: a bearer token or a staff session", 401)
    # The view is exempt from the middleware's check only so that token clients need no CSRF token;
    # a session (a browser) must pass it.
    rejected = CsrfViewMiddleware(lambda _request: None).process_view(request, None, (), {})
    if rejected is not None:
        return None, _api_error("CSRF check failed: send the csrftoken cookie and the X-CSRFToken header", 403)
    return request.user, None


@csrf_exempt
@require_POST
def harness_import_api(request: HttpRequest) -> JsonResponse:
    """POST a results file (multipart field ``file``, or the JSON itself as the body) to import it.

    Optional parameters (form fields or query string): ``model`` (contender display name or id) and
    ``dry_run`` (1/true). Staff only. Answers what was imported, or the error with status 400 and
    nothing written.
    """
    user, error = _api_user(request)
    if error is not None:
        return error
    if ADMIN not in user_roles(user):
        return _api_error("importing benchmark results is for admins (staff) only", 403)
    def param(key: str) -> str:
        return request.POST.get(key) or request.GET.get(key) or ""

    upload = request.FILES.get(UPLOAD_FIELD)
    if upload is not None:
        source, name = upload, upload.name
    elif request.content_type in ("application/json", "application/octet-stream", "text/plain") and request.body:
        source, name = request.body, param("name") or "upload.json"
    else:
        return _api_error(f"expected a results file: multipart field '{UPLOAD_FIELD}' or a JSON body", 400)
    dry_run = param("dry_run").lower() in {"1", "true", "yes", "on"}
    try:
        report = harness_services.harness_import(path_or_bytes=source, name=name, contender=param("model") or None,
                                                 dry_run=dry_run, user=user)
    except harness_services.HarnessImportError as failure:
        return _api_error(f"{failure}; nothing was imported", 400)
    return JsonResponse({"ok": True, **report.to_dict(include_rows=dry_run)},
                        status=201 if report.created else 200)
