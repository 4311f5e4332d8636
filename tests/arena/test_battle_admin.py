"""Battles in the Django admin: the identity-leak flag is listed and filterable."""
from __future__ import annotations

import uuid

import pytest

from arena.models import Battle

pytestmark = pytest.mark.django_db


def test_leaked_battles_are_listed_and_filterable(admin_client, make_contender, django_user_model):
    a, b = make_contender("test-quick-1b", "tgi"), make_contender("test-quick-1b", "ollama")
    rater = django_user_model.objects.create_user("rater-adm", password="pw-rater-123")
    leaked = Battle.objects.create(public_id=uuid.uuid4(), rater=rater, model_a=a, model_b=b, identity_leak=True)
    clean = Battle.objects.create(public_id=uuid.uuid4(), rater=rater, model_a=b, model_b=a, anonymous=False)

    listing = admin_client.get("/admin/arena/battle/")
    assert listing.status_code == 200
    assert str(leaked.public_id) in listing.content.decode() and str(clean.public_id) in listing.content.decode()
    assert "identity_leak__exact" in listing.content.decode()  # the filter is offered

    only_leaked = admin_client.get("/admin/arena/battle/?identity_leak__exact=1").content.decode()
    assert str(leaked.public_id) in only_leaked and str(clean.public_id) not in only_leaked
    named = admin_client.get("/admin/arena/battle/?anonymous__exact=0").content.decode()
    assert str(clean.public_id) in named and str(leaked.public_id) not in named


def test_an_admin_can_clear_a_false_alarm(admin_client, make_contender, django_user_model):
    a, b = make_contender("test-quick-1b", "tgi"), make_contender("test-quick-1b", "ollama")
    rater = django_user_model.objects.create_user("rater-adm2", password="pw-rater-123")
    battle = Battle.objects.create(public_id=uuid.uuid4(), rater=rater, model_a=a, model_b=b, identity_leak=True)
    response = admin_client.post(f"/admin/arena/battle/{battle.pk}/change/", {})  # the checkbox unticked
    assert response.status_code == 302
    battle.refresh_from_db()
    assert battle.identity_leak is False
    assert battle.model_a == a and battle.rater == rater  # everything else is read-only
    assert admin_client.get("/admin/arena/battle/add/").status_code == 403
