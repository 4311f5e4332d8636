"""Configuration: the embedded default vs the production topology."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.fixtures.services import REPO_ROOT

PRINT_SETTINGS = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'engine': s.DATABASES['default']['ENGINE'], 'debug': s.DEBUG, "
    "'layer': s.CHANNEL_LAYERS['default']['BACKEND'], 'in_process': s.GENERATION_IN_PROCESS, "
    "'broker': s.CELERY_BROKER_URL, 'secure_cookie': s.SESSION_COOKIE_SECURE}))"
)


def run_settings(env_overrides: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG"}}
    env.update({"DJANGO_SETTINGS_MODULE": "arena.settings", "SQLITE_PATH": str(tmp_path / "db.sqlite3")})
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", PRINT_SETTINGS], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_embedded_default_needs_nothing(tmp_path):
    import json

    result = run_settings({}, tmp_path)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["engine"] == "django.db.backends.sqlite3"
    assert values["layer"] == "channels.layers.InMemoryChannelLayer"
    assert values["in_process"] is True
    assert values["debug"] is True


def test_production_topology_without_secret_key_refuses_to_start(tmp_path):
    result = run_settings({"DATABASE_URL": "postgres://u@127.0.0.1:1/db", "REDIS_URL": "redis://127.0.0.1:1/0"},
                          tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_topology_uses_postgres_redis_and_is_not_debug(tmp_path):
    import json

    result = run_settings({"DATABASE_URL": "postgres://u@127.0.0.1:1/db", "REDIS_URL": "redis://127.0.0.1:1/0",
                           "SECRET_KEY": "x" * 50}, tmp_path)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["engine"] == "django.db.backends.postgresql"
    assert values["layer"] == "arena.channel_layer.ArenaRedisChannelLayer"
    assert values["broker"] == "redis://127.0.0.1:1/0"
    assert values["in_process"] is False
    assert values["debug"] is False
    assert values["secure_cookie"] is True


def test_secret_key_can_come_from_a_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-a-file-" + "y" * 40 + "\n")
    result = run_settings({"DATABASE_URL": "postgres://u@127.0.0.1:1/db", "SECRET_KEY_FILE": str(secret)}, tmp_path)
    assert result.returncode == 0, result.stderr


def test_malformed_boolean_is_a_clear_error(tmp_path):
    result = run_settings({"DEBUG": "maybe"}, tmp_path)
    assert result.returncode != 0
    assert "DEBUG must be a boolean" in result.stderr


PRINT_DATABASE = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "d = s.DATABASES['default']; print(json.dumps({'pool': d.get('OPTIONS', {}).get('pool'), "
    "'max_age': d['CONN_MAX_AGE'], 'checks': d['CONN_HEALTH_CHECKS']}))"
)


def database_settings(env_overrides: dict[str, str], tmp_path) -> dict:
    import json

    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG", "DB_POOL_MAX_SIZE",
                        "DB_POOL_TIMEOUT_SECONDS", "DB_CONN_MAX_AGE"}}
    env.update({"DJANGO_SETTINGS_MODULE": "arena.settings", "SQLITE_PATH": str(tmp_path / "db.sqlite3"),
                "DATABASE_URL": "postgres://u@127.0.0.1:1/db", "REDIS_URL": "redis://127.0.0.1:1/0",
                "SECRET_KEY": "x" * 50, **env_overrides})
    result = subprocess.run([sys.executable, "-c", PRINT_DATABASE], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_postgres_uses_a_checked_connection_pool_by_default_that_fails_fast(tmp_path):
    values = database_settings({}, tmp_path)
    assert values["pool"] == {"min_size": 2, "max_size": 20, "timeout": 3.0}
    assert values["checks"] is True  # a connection broken by a restart is replaced, not handed out
    assert values["max_age"] == 0


def test_connection_pool_can_be_sized_turned_off_or_replaced_by_persistent_connections(tmp_path):
    assert database_settings({"DB_POOL_MAX_SIZE": "5", "DB_POOL_TIMEOUT_SECONDS": "1.5"}, tmp_path)["pool"] == {
        "min_size": 2, "max_size": 5, "timeout": 1.5}
    assert database_settings({"DB_POOL_MAX_SIZE": "0"}, tmp_path)["pool"] is None
    persistent = database_settings({"DB_CONN_MAX_AGE": "60"}, tmp_path)
    assert persistent["pool"] is None and persistent["max_age"] == 60
