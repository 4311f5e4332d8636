from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from prometheus_client.parser import text_string_to_metric_families


def sample_values(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a Prometheus text exposition: (name, labels) -> value."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (sample_name, sample_labels), v in samples.items()
               if sample_name == name and wanted <= sample_labels)


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user("ops-staff", password="pw-staff-123", is_staff=True)


@pytest.fixture
def rater_user(django_user_model):
    user = django_user_model.objects.create_user("ops-rater", password="pw-rater-123")
    user.groups.add(Group.objects.get_or_create(name="rater")[0])
    return user
