"""Reads of the registry."""
from __future__ import annotations

from django.db.models import QuerySet

from arena.models import ArenaModel, HealthStatus


def contenders_offerable() -> QuerySet[ArenaModel]:
    """Contenders a battle may use: enabled, with weight, on a server whose last check passed."""
    return (
        ArenaModel.objects.filter(enabled=True, sampling_weight__gt=0, server__health_status=HealthStatus.UP)
        .select_related("server", "preset")
    )
