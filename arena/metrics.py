"""Prometheus metrics: definitions, small ``record_*`` helpers, the ``/metrics`` view and the
worker's own metrics endpoint.

Labels carry server names, view names, methods, statuses and outcomes, never a contender's name:
metrics are for admins, but a label is the easiest place for an identity to leak from.

Several processes: when ``PROMETHEUS_MULTIPROC_DIR`` is set (before this module is imported),
prometheus_client keeps values in files there and a scrape sums every process's files, so N web
processes answer as one. Without it each process reports its own values: fine for one web process
and for a Celery worker on the thread pool, which serves its metrics on ``WORKER_METRICS_PORT``.
"""
from __future__ import annotations

import hmac
import logging
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

GENERATION_OUTCOMES = ("done", "failed", "stopped")
_KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

HTTP_REQUESTS = Counter(
    "arena_http_requests_total", "HTTP requests answered, by method, view and status.",
    ["method", "view", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "arena_http_request_duration_seconds", "Time to answer an HTTP request, by view.", ["view"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
WEBSOCKETS_OPEN = Gauge(
    "arena_websockets_open", "WebSocket connections open now, by consumer.", ["consumer"],
    multiprocess_mode="livesum",
)
GENERATIONS = Counter(
    "arena_generations_total", "Generations finished, by backend server and outcome (done, failed, stopped).",
    ["server", "outcome"],
)
TIME_TO_FIRST_TOKEN = Histogram(
    "arena_time_to_first_token_seconds", "Time to first token of finished generations, by backend server.",
    ["server"], buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0),
)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "arena_time_per_output_token_seconds", "Mean time per output token of finished generations, by backend server.",
    ["server"], buckets=(0.002, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.2, 0.5, 1.0),
)
VOTES = Counter("arena_votes_total", "Votes stored, by winner (model_a, model_b, tie, tie (bothbad)).", ["winner"])


# ---------------------------------------------------------------- record helpers (one call per event)

def record_request(*, method: str, view: str, status: int, seconds: float) -> None:
    method = method if method in _KNOWN_METHODS else "other"
    HTTP_REQUESTS.labels(method=method, view=view, status=str(status)).inc()
    HTTP_REQUEST_SECONDS.labels(view=view).observe(max(seconds, 0.0))


def record_websocket_open(consumer) -> None:
    """Count ``consumer`` (a Channels consumer instance) as open; call after ``accept()``."""
    consumer._metrics_counted = True
    WEBSOCKETS_OPEN.labels(consumer=type(consumer).__name__).inc()


def record_websocket_closed(consumer) -> None:
    """Undo :func:`record_websocket_open`; harmless for a connection that was refused or already counted out."""
    if getattr(consumer, "_metrics_counted", False):
        consumer._metrics_counted = False
        WEBSOCKETS_OPEN.labels(consumer=type(consumer).__name__).dec()


def record_generation(*, server: str, outcome: str, ttft_ms: float | None = None,
                      tpot_ms: float | None = None) -> None:
    if outcome not in GENERATION_OUTCOMES:
        raise ValueError(f"unknown generation outcome {outcome!r}")
    GENERATIONS.labels(server=server, outcome=outcome).inc()
    if ttft_ms is not None:
        TIME_TO_FIRST_TOKEN.labels(server=server).observe(ttft_ms / 1000.0)
    if tpot_ms is not None:
        TIME_PER_OUTPUT_TOKEN.labels(server=server).observe(tpot_ms / 1000.0)


def record_generation_done(generation, finish) -> None:
    """A Generation stored as done, with the backend's Finish (timings in milliseconds)."""
    record_generation(server=generation.contender.server.name, outcome="done", ttft_ms=finish.ttft_ms,
                      tpot_ms=finish.tpot_ms)


def record_generation_failed(generation) -> None:
    record_generation(server=generation.contender.server.name, outcome="failed")


def record_generation_stopped(generation) -> None:
    record_generation(server=generation.contender.server.name, outcome="stopped")


def record_vote(*, winner: str) -> None:
    VOTES.labels(winner=winner).inc()


# ---------------------------------------------------------------- scrape side

class CeleryQueueCollector:
    """Length of each Celery queue (a Redis list: the default one and the ratings one), read when
    scraped, not stored."""

    def collect(self):
        from django.conf import settings

        if not settings.REDIS_URL:
            return
        from workers.celery import app

        queues = list(dict.fromkeys([app.conf.task_default_queue or "celery", settings.RATINGS_QUEUE]))
        from workers.dispatch import queue_lengths

        try:
            lengths = queue_lengths(queues)
        except Exception as exc:  # a scrape must still answer when Redis does not
            log.warning("metrics: cannot read the length of queues %s: %s", ", ".join(queues), type(exc).__name__)
            return
        family = GaugeMetricFamily("arena_celery_queue_length", "Tasks waiting in a Celery queue (Redis list).",
                                   labels=["queue"])
        for queue, length in zip(queues, lengths):
            family.add_metric([queue], length)
        yield family


def multiprocess_enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def scrape_registry(*, include_queue: bool) -> CollectorRegistry:
    """What a scrape reads: every process's values in multiprocess mode, else this process's."""
    if multiprocess_enabled():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    elif not include_queue:
        return REGISTRY
    else:
        registry = CollectorRegistry()
        registry.register(_ProcessRegistry())
    if include_queue:
        registry.register(CeleryQueueCollector())
    return registry


class _ProcessRegistry:
    """This process's default registry, as one collector of a per-scrape registry."""

    def collect(self):
        yield from REGISTRY.collect()


def _may_read_metrics(request) -> bool:
    from django.conf import settings

    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if not token or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer "):].strip().encode(), token.encode())


def metrics_view(request):
    """``/metrics``: staff users, or ``Authorization: Bearer $METRICS_TOKEN``; everyone else gets 403."""
    from django.http import HttpResponse, HttpResponseForbidden, HttpResponseNotAllowed

    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    if not _may_read_metrics(request):
        return HttpResponseForbidden("Metrics are for staff users or a bearer token.", content_type="text/plain")
    return HttpResponse(generate_latest(scrape_registry(include_queue=True)), content_type=CONTENT_TYPE_LATEST)


# ---------------------------------------------------------------- worker endpoint

_worker_server = None


def start_worker_metrics_server() -> int | None:
    """Serve this worker's metrics on ``WORKER_METRICS_PORT`` (unset or 0: nothing). Returns the port."""
    global _worker_server
    from django.conf import settings

    port = settings.WORKER_METRICS_PORT
    if not port or _worker_server is not None:
        return None
    from prometheus_client import start_http_server

    _worker_server, _thread = start_http_server(port, addr=settings.WORKER_METRICS_ADDR,
                                                registry=scrape_registry(include_queue=False))
    log.info("worker metrics on %s:%s", settings.WORKER_METRICS_ADDR, port)
    return port


def _on_worker_ready(sender=None, **kwargs) -> None:
    start_worker_metrics_server()


def connect_worker_signals() -> None:
    """Start the metrics endpoint once the worker is ready (its main process: the thread pool shares it)."""
    from celery.signals import worker_ready

    worker_ready.connect(_on_worker_ready, weak=False, dispatch_uid="arena-worker-metrics")
