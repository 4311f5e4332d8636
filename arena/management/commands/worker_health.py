"""Exit 0 when a Celery worker answers a ping through the broker, non-zero with the reason otherwise.

Used as the worker's compose healthcheck (``--node celery@$HOSTNAME`` checks that very worker).
"""
from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Ping Celery workers through the broker; exit non-zero when none (or not the named one) answers."

    def add_arguments(self, parser):
        parser.add_argument("--node", action="append", default=[],
                            help="Worker node name to ping, e.g. celery@host (repeatable; default: any worker).")
        parser.add_argument("--timeout", type=float, default=5.0, help="Seconds to wait for answers (default 5).")

    def handle(self, *args, node: list[str], timeout: float, **options):
        if not settings.REDIS_URL:
            raise CommandError("REDIS_URL is not set: in the embedded default there is no Celery worker to check.")
        self._check_broker(timeout)
        from workers.celery import app

        try:
            replies = app.control.ping(destination=node or None, timeout=timeout)
        except Exception as exc:
            raise CommandError(f"Could not ping workers through the broker ({type(exc).__name__}).") from None
        answered = sorted(name for reply in replies for name, body in reply.items() if body.get("ok") == "pong")
        missing = sorted(set(node) - set(answered))
        if not answered or missing:
            wanted = ", ".join(missing) if missing else "any worker"
            raise CommandError(f"No answer from {wanted} within {timeout:g} s: the worker is down, busy "
                               "starting, or on another broker.")
        for name in answered:
            self.stdout.write(f"{name}: pong")

    @staticmethod
    def _check_broker(timeout: float) -> None:
        """Fail fast and plainly when Redis itself is unreachable (a ping would only time out)."""
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=min(timeout, 3),
                                      socket_timeout=min(timeout, 3))
        try:
            client.ping()
        except redis.RedisError as exc:
            raise CommandError(f"The broker (Redis at REDIS_URL) is unreachable ({type(exc).__name__}).") from None
        finally:
            client.close()
