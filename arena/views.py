from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from arena.health import health_response
from arena.roles import ADMIN, RATER, VIEWER, user_roles
from arena.selectors import battles_of_rater, contenders_nameable, contenders_offerable


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


@login_required
@require_GET
def named_battle_page(request: HttpRequest) -> HttpResponse:
    """Side-by-side with names (viewers and admins): pick two contenders, then the usual battle flow."""
    if not user_roles(request.user) & {VIEWER, ADMIN}:
        raise PermissionDenied("Only viewers and admins can compare named models.")
    return render(request, "arena/battle.html", {"max_prompt_chars": settings.ARENA_MAX_PROMPT_CHARS,
                                                 "named": True, "contenders": contenders_nameable()})


@rater_required
@require_GET
def history_page(request: HttpRequest) -> HttpResponse:
    return render(request, "arena/history.html", {"battles": battles_of_rater(rater=request.user)})


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness of the web process, its database and (when configured) Redis; 503 with a plain reason."""
    return health_response()
