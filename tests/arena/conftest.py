from __future__ import annotations

import pytest


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-boss-123")
    client.force_login(user)
    return client


@pytest.fixture
def in_process_generation(settings):
    """Tasks run in this process's thread pool (the embedded default's path, same task code).

    At teardown the pool is drained, so no task (a generation, a vote's rating update) is still
    writing while the test database is flushed.
    """
    from workers import dispatch

    settings.GENERATION_IN_PROCESS = True
    yield
    if dispatch._executor is not None:
        dispatch._executor.shutdown(wait=True)
        dispatch._executor = None
