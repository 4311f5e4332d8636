"""The Celery application (``celery -A workers worker``)."""
from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")

app = Celery("arena")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Every app with tasks: a worker that did not register a task would drop its messages.
app.autodiscover_tasks(["workers", "leaderboard"])

from arena.metrics import connect_worker_signals  # noqa: E402  (serves metrics on WORKER_METRICS_PORT)
from leaderboard import rating_pool  # noqa: E402  (a ratings worker starts its rating pool when ready)

connect_worker_signals()
rating_pool.connect_worker_signals()
