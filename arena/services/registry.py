"""Writes to the endpoint registry: health checks, test connections, model discovery."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from arena.models import ArenaModel, BackendKind, BackendServer, DecodingPreset, HealthStatus
from workers.backends import BackendError, Delta, Finish, Message, get_adapter

log = logging.getLogger(__name__)

DEFAULT_PRESET_NAME = "default"


def redact(text: str, *, secrets: list[str]) -> str:
    """Remove secrets from a message before it is stored or shown."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    status: str
    error: str


def server_health_check(*, server: BackendServer) -> HealthResult:
    """Probe one server and record the outcome (down after N failures in a row, up after one success)."""
    try:
        get_adapter(server.kind).health(server.endpoint())
    except BackendError as exc:
        return server_record_health(server=server, ok=False, error=str(exc))
    return server_record_health(server=server, ok=True, error="")


def server_record_health(*, server: BackendServer, ok: bool, error: str) -> HealthResult:
    error = redact(error, secrets=[server.auth_token])
    now = timezone.now()
    with transaction.atomic():
        locked = BackendServer.objects.select_for_update().get(pk=server.pk)
        locked.last_checked_at = now
        if ok:
            locked.consecutive_failures = 0
            locked.health_status = HealthStatus.UP
            locked.last_healthy_at = now
            locked.last_error = ""
        else:
            locked.consecutive_failures += 1
            locked.last_error = error[:2000]
            if locked.consecutive_failures >= settings.HEALTH_FAILURES_BEFORE_DOWN:
                locked.health_status = HealthStatus.DOWN
        locked.save(update_fields=[
            "last_checked_at", "consecutive_failures", "health_status", "last_healthy_at", "last_error", "updated_at",
        ])
    if locked.health_status != server.health_status:
        log.info("backend server %s is now %s", locked.pk, locked.health_status)
    server.refresh_from_db()
    return HealthResult(ok=ok, status=locked.health_status, error=locked.last_error)


@dataclass(frozen=True)
class ConnectionReport:
    ok: bool
    text: str
    finish_reason: str
    output_tokens: int | None
    ttft_ms: float | None
    tpot_ms: float | None
    error: str = ""


def contender_test_connection(
    *, contender: ArenaModel, prompt: str = "Say hello in one short sentence.", max_new_tokens: int = 32
) -> ConnectionReport:
    """Health check plus one short generation through the contender's own settings."""
    server = contender.server
    health = server_health_check(server=server)
    if not health.ok:
        return ConnectionReport(False, "", "", None, None, None, error=f"Health check failed: {health.error}")
    preset_params = contender.preset.params()
    params = replace(preset_params, max_new_tokens=min(max_new_tokens, preset_params.max_new_tokens))
    messages = []
    if contender.system_prompt:
        messages.append(Message("system", contender.system_prompt))
    messages.append(Message("user", prompt))
    chunks: list[str] = []
    try:
        for item in get_adapter(server.kind).stream(contender.endpoint(), messages, params):
            if isinstance(item, Delta):
                chunks.append(item.text)
            elif isinstance(item, Finish):
                return ConnectionReport(True, "".join(chunks), item.finish_reason, item.output_tokens,
                                        item.ttft_ms, item.tpot_ms)
    except BackendError as exc:
        return ConnectionReport(False, "".join(chunks), "", None, None, None,
                                error=redact(str(exc), secrets=[server.auth_token]))
    return ConnectionReport(False, "".join(chunks), "", None, None, None, error="The stream ended without finishing.")


def default_preset() -> DecodingPreset:
    preset, _ = DecodingPreset.objects.get_or_create(
        name=DEFAULT_PRESET_NAME, defaults={"temperature": 0.7, "max_new_tokens": 512}
    )
    return preset


@dataclass(frozen=True)
class DiscoveryReport:
    created: list[ArenaModel]
    already_registered: list[str]
    found: list[str]


def server_discover_models(*, server: BackendServer) -> DiscoveryReport:
    """List the server's models and register each new one as a *disabled* contender for review."""
    discovered = get_adapter(server.kind).discover(server.endpoint())
    preset = default_preset()
    created: list[ArenaModel] = []
    existing: list[str] = []
    with transaction.atomic():
        for model in discovered:
            model_id = "tgi" if server.kind == BackendKind.TGI else model.model_id
            if ArenaModel.objects.filter(server=server, backend_model_id=model_id).exists():
                existing.append(model.model_id)
                continue
            display_name = _unique_display_name(f"{model.model_id} ({server.name})")
            created.append(ArenaModel.objects.create(
                display_name=display_name,
                server=server,
                backend_model_id=model_id,
                preset=preset,
                context_length=model.context_length,
                enabled=False,
            ))
    return DiscoveryReport(created=created, already_registered=existing, found=[m.model_id for m in discovered])


def _unique_display_name(base: str) -> str:
    base = base[:90]
    name, n = base, 2
    while ArenaModel.objects.filter(display_name=name).exists():
        name, n = f"{base} #{n}", n + 1
    return name


def check_all_servers() -> dict[str, int]:
    counts = {"up": 0, "down": 0, "failing": 0}
    for server in BackendServer.objects.all():
        started = time.monotonic()
        result = server_health_check(server=server)
        if result.ok:
            counts["up"] += 1
        elif result.status == HealthStatus.DOWN:
            counts["down"] += 1
        else:
            counts["failing"] += 1
        log.debug("health check of server %s took %.0f ms", server.pk, (time.monotonic() - started) * 1000)
    return counts
