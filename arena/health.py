"""Health of the web process's dependencies, for ``/healthz`` (load balancers, compose healthchecks).

A failure answers 503 with a short plain reason naming the dependency and the error type; the
exception text (hosts, users, URLs) goes to the log only.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse

log = logging.getLogger(__name__)


def _check_database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        connection.close()  # do not hand a broken connection to the next request
        raise


def _check_redis() -> None:
    """Redis is the Celery broker and the channel layer: both fail together, so one ping covers both."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def health_problems() -> list[str]:
    checks = [("database", _check_database)]
    if settings.REDIS_URL:
        checks.append(("redis", _check_redis))
    problems = []
    for name, check in checks:
        try:
            check()
        except Exception as exc:
            log.warning("healthz: %s check failed: %s", name, exc)
            problems.append(f"{name}: unreachable ({type(exc).__name__})")
    return problems


def health_response() -> HttpResponse:
    problems = health_problems()
    if problems:
        return HttpResponse("unhealthy: " + "; ".join(problems) + "\n", status=503, content_type="text/plain")
    return JsonResponse({"status": "ok"})
