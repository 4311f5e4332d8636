from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from arena.roles import user_roles
from arena.selectors import contenders_offerable


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "arena/home.html", {
        "roles": user_roles(request.user),
        "contender_count": contenders_offerable().count(),
    })


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness of the web process and its database (no contender or server detail)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
