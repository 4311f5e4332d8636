"""Roles are Django groups: rater, viewer (product managers); admins are staff."""
from __future__ import annotations

from functools import lru_cache

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
    away or an account disabled takes effect at once, not at the next login. The statement is
    written out once per set of roles (``arena.sql``: building it through the ORM cost more than
    running it).
    """
    from django.db import connection

    from arena.sql import execute

    groups = sorted(role for role in allowed if role in (RATER, VIEWER))
    staff = ADMIN in allowed
    with execute(_may_sql(connection.vendor, tuple(groups), staff),
                 [user_id, True, *groups, *([True] if staff else [])]) as cursor:
        return cursor.fetchone() is not None


@lru_cache(maxsize=16)
def _may_sql(vendor: str, groups: tuple[str, ...], staff: bool) -> str:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from arena.sql import column, table

    user = get_user_model()
    through = user.groups.through
    conditions = []
    if groups:
        marks = ", ".join(["%s"] * len(groups))
        conditions.append(
            f"EXISTS (SELECT 1 FROM {table(through)} ug JOIN {table(Group)} g"
            f" ON g.{column(Group, 'id')} = ug.{column(through, 'group')}"
            f" WHERE ug.{column(through, 'user')} = u.{column(user, 'id')} AND g.{column(Group, 'name')} IN ({marks}))")
    if staff:
        conditions.append(f"u.{column(user, 'is_staff')} = %s")
    role = " OR ".join(conditions) if conditions else "1 = 0"
    return (f"SELECT 1 FROM {table(user)} u WHERE u.{column(user, 'id')} = %s"
            f" AND u.{column(user, 'is_active')} = %s AND ({role})")
