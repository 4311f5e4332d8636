"""``roles.user_may``: the role check every WebSocket action makes, against the stored user."""
from __future__ import annotations

import itertools

import pytest
from django.contrib.auth.models import Group

from arena import roles

pytestmark = pytest.mark.django_db

ALLOWED_SETS = [set(), {roles.RATER}, {roles.VIEWER}, {roles.ADMIN}, {roles.RATER, roles.ADMIN},
                {roles.VIEWER, roles.ADMIN}, {roles.RATER, roles.VIEWER}, {roles.RATER, roles.VIEWER, roles.ADMIN}]


def test_user_may_agrees_with_the_stored_groups_staff_flag_and_active_flag(django_user_model):
    rater_group, _ = Group.objects.get_or_create(name=roles.RATER)
    viewer_group, _ = Group.objects.get_or_create(name=roles.VIEWER)
    other_group, _ = Group.objects.get_or_create(name="someone-else")
    users = []
    for index, (rater, viewer, staff, active, other) in enumerate(itertools.product([False, True], repeat=5)):
        user = django_user_model.objects.create_user(f"user-{index}", password="pw-roles-123", is_staff=staff,
                                                     is_active=active)
        user.groups.set([g for g, on in ((rater_group, rater), (viewer_group, viewer), (other_group, other)) if on])
        users.append(user)
    for user in users:
        held = roles.user_roles(user) if user.is_active else set()
        for allowed in ALLOWED_SETS:
            assert roles.user_may(user.pk, allowed) == bool(held & allowed), (user.username, allowed)
    assert not roles.user_may(10 ** 9, {roles.RATER, roles.VIEWER, roles.ADMIN})  # no such user


def test_a_role_taken_away_is_seen_by_the_next_check(django_user_model):
    rater_group, _ = Group.objects.get_or_create(name=roles.RATER)
    user = django_user_model.objects.create_user("revoked", password="pw-roles-123")
    user.groups.add(rater_group)
    assert roles.user_may(user.pk, {roles.RATER})
    user.groups.remove(rater_group)
    assert not roles.user_may(user.pk, {roles.RATER})
