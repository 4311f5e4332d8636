"""Per-server concurrency is enforced across processes through Redis."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from tests.fixtures.services import REPO_ROOT, subprocess_env
from workers.backends import BackendError
from workers.concurrency import server_slot, slots_in_use

HOLDER = textwrap.dedent("""
    import os, sys, time, django
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")
    django.setup()
    import redis
    from django.conf import settings
    from workers.concurrency import server_slot
    r = redis.Redis.from_url(settings.REDIS_URL)
    with server_slot(server_id=77, limit=2, lease_s=30, wait_s=20):
        now = r.incr("test:inside")
        r.rpush("test:peaks", now)
        time.sleep(0.3)
        r.decr("test:inside")
""")


def test_limit_holds_across_worker_processes(redis_client, db):
    procs = [subprocess.Popen([sys.executable, "-c", HOLDER], cwd=REPO_ROOT, env=subprocess_env())
             for _ in range(6)]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    peaks = [int(x) for x in redis_client.lrange("test:peaks", 0, -1)]
    assert len(peaks) == 6
    assert max(peaks) == 2  # never more than the limit at once, and the limit was used
    assert slots_in_use(77) == 0


def test_busy_server_gives_a_retryable_error(redis_client, settings):
    with server_slot(server_id=5, limit=1, lease_s=30, wait_s=1):
        started = time.monotonic()
        with pytest.raises(BackendError) as info:
            with server_slot(server_id=5, limit=1, lease_s=30, wait_s=0.3):
                pass
        assert time.monotonic() - started >= 0.3
    assert info.value.retryable and info.value.code == "busy"


def test_dead_holder_frees_its_slot_when_the_lease_ends(redis_client):
    # A worker killed mid-generation never releases: the lease expiry does it.
    from workers.concurrency import _ACQUIRE, slot_key

    acquire = redis_client.register_script(_ACQUIRE)
    now = time.time()
    assert acquire(keys=[slot_key(9)], args=[1, now, now + 0.2, "dead-worker"]) == 1
    with pytest.raises(BackendError):
        with server_slot(server_id=9, limit=1, lease_s=30, wait_s=0.05):
            pass
    time.sleep(0.25)
    with server_slot(server_id=9, limit=1, lease_s=30, wait_s=0.05):
        assert slots_in_use(9) == 1
