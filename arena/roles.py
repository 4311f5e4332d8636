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
