"""Roles are Django groups: rater, viewer (product managers); admins are staff."""
from __future__ import annotations

RATER = "rater"
VIEWER = "viewer"
ADMIN = "admin"


def user_roles(user) -> set[str]:
    if not user.is_authenticated:
        return set()
    roles = set(user.groups.values_list("name", flat=True)) & {RATER, VIEWER}
    if user.is_staff:
        roles.add(ADMIN)
    return roles


def user_may(user_id: int, allowed: set[str]) -> bool:
    """Whether the user, as stored now (active, staff flag, groups), has one of the ``allowed`` roles.

    One query; long-lived connections (WebSockets) ask it again for every action, so a role taken
    away or an account disabled takes effect at once, not at the next login.
    """
    from django.contrib.auth import get_user_model
    from django.db.models import Q

    groups = [role for role in allowed if role in (RATER, VIEWER)]
    condition = Q(groups__name__in=groups) if groups else Q(pk__in=[])
    if ADMIN in allowed:
        condition |= Q(is_staff=True)
    return get_user_model().objects.filter(pk=user_id, is_active=True).filter(condition).exists()

