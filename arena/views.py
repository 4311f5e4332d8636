from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from arena.roles import ADMIN, RATER, user_roles
from arena.selectors import battles_of_rater, contenders_offerable


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "arena/home.html", {
        "roles": user_roles(request.user),
        "contender_count": contenders_offerable().count(),
    })


def rater_required(view):
    """Raters and admins only; anyone else gets a 403 page (anonymous users go to the login page)."""

    @login_required
    def wrapped(request, *args, **kwargs):
        if not user_roles(request.user) & {RATER, ADMIN}:
            raise PermissionDenied("Only raters can take part in battles.")
        return view(request, *args, **kwargs)

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


@rater_required
@require_GET
def battle_page(request: HttpRequest) -> HttpResponse:
    return render(request, "arena/battle.html", {"max_prompt_chars": settings.ARENA_MAX_PROMPT_CHARS})


@rater_required
@require_GET
def history_page(request: HttpRequest) -> HttpResponse:
    return render(request, "arena/history.html", {"battles": battles_of_rater(rater=request.user)})


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness of the web process and its database (no contender or server detail)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
