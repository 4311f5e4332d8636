"""docker/compose.yml names only what exists: commands, the ASGI target, the Celery app, env variables.

No Docker engine runs here, so the file is checked against the project itself: every command a
project service or healthcheck runs is parsed by the real command-line parser it would meet.
"""
from __future__ import annotations

import ast
import importlib
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_PATH = REPO_ROOT / "docker" / "compose.yml"
ENV_EXAMPLE_PATH = REPO_ROOT / "docker" / "env.example"
SETTINGS_PATH = REPO_ROOT / "arena" / "settings.py"
ENV_HELPERS = {"env_str", "env_bool", "env_int", "env_float", "env_list", "env_required"}
# Read by a library rather than by the settings; set only inside the compose file.
LIBRARY_VARIABLES = {"PROMETHEUS_MULTIPROC_DIR": "prometheus_client (multiprocess mode)"}
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
ENV_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")


def compose() -> dict:
    return yaml.safe_load(COMPOSE_PATH.read_text())


def project_services() -> dict[str, dict]:
    """Services that run this project's image (the others are upstream images we only configure)."""
    return {name: svc for name, svc in compose()["services"].items() if "build" in svc}


def interpolate(value: str) -> str:
    """What compose would substitute: the default when one is given, else a placeholder."""
    def substitute(match: re.Match) -> str:
        kind, default = match.group(2), match.group(3)
        return default if kind in (":-", "-") else "placeholder"

    return INTERPOLATION.sub(substitute, value).replace("$$", "$")


def settings_variables() -> set[str]:
    """Names the settings read through the arena.env helpers (string literals, as the helpers require)."""
    names = set()
    for node in ast.walk(ast.parse(SETTINGS_PATH.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ENV_HELPERS:
            first = node.args[0]
            assert isinstance(first, ast.Constant) and isinstance(first.value, str), ast.dump(node)
            names.add(first.value)
    return names


def env_example() -> dict[str, tuple[str, bool]]:
    """name -> (value, set): commented ``# NAME=default`` lines document a default left unset."""
    found = {}
    for line in ENV_EXAMPLE_PATH.read_text().splitlines():
        match = ENV_LINE.match(line.strip())
        if match:
            found[match.group(1)] = (match.group(2), not line.lstrip().startswith("#"))
    return found


def compose_interpolated() -> set[str]:
    return {m.group(1) for m in INTERPOLATION.finditer(COMPOSE_PATH.read_text())}


def commands_of(service: dict) -> list[list[str]]:
    """argv lists run by a service: its command and its healthcheck (shell lines split on && || ;)."""
    lines: list[list[str]] = []
    command = service.get("command")
    if isinstance(command, list):
        lines.append([interpolate(part) for part in command])
    elif isinstance(command, str):
        lines.append(shlex.split(interpolate(command)))
    test = (service.get("healthcheck") or {}).get("test")
    if test:
        if test[0] == "CMD":
            lines.append([interpolate(part) for part in test[1:]])
        elif test[0] == "CMD-SHELL":
            shell = interpolate(test[1]).replace("$HOSTNAME", "host-name")
            for part in re.split(r"&&|\|\||;", shell):
                if part.strip() and part.strip() != "exit 1":
                    lines.append(shlex.split(part))
    return lines


def check_manage_py(argv: list[str]) -> None:
    from django.core.management import get_commands, load_command_class

    name, args = argv[0], argv[1:]
    commands = get_commands()
    assert name in commands, f"manage.py has no command {name!r}"
    parser = load_command_class(commands[name], name).create_parser("manage.py", name)
    parser.parse_args(args)  # raises CommandError on an unknown option or a bad value


def check_celery(argv: list[str]) -> None:
    from celery import Celery
    from celery.app.utils import find_app
    from celery.bin.celery import celery as celery_cli

    assert argv[:2] == ["-A", "workers"], f"celery must be started with -A workers: {argv}"
    assert isinstance(find_app("workers"), Celery)
    subcommand, options = argv[2], argv[3:]
    assert subcommand in celery_cli.commands, f"celery has no subcommand {subcommand!r}"
    known = {opt for param in celery_cli.commands[subcommand].params for opt in param.opts}
    for option in options:
        if option.startswith("-"):
            assert option.split("=")[0] in known, f"celery {subcommand} has no option {option}"


def check_uvicorn(argv: list[str]) -> None:
    import uvicorn

    context = uvicorn.main.make_context("uvicorn", list(argv))  # parses and validates every option
    module_name, _, attribute = context.params["app"].partition(":")
    application = getattr(importlib.import_module(module_name), attribute)
    assert callable(application)


def check_python_snippet(code: str) -> None:
    from django.urls import resolve

    compile(code, "<healthcheck>", "exec")
    allowed_hosts = env_example()["ALLOWED_HOSTS"][0].split(",")
    for url in re.findall(r"https?://[^'\" ]+", code):
        parts = urlsplit(url)
        resolve(parts.path)  # the URL a healthcheck polls must exist
        assert parts.hostname in allowed_hosts, f"{url}: Django would answer 400 (host not in ALLOWED_HOSTS)"


def check_command(argv: list[str]) -> None:
    if argv[0] == "exec":
        argv = argv[1:]
    if argv[:2] == ["python", "manage.py"]:
        check_manage_py(argv[2:])
    elif argv[:2] == ["python", "-c"]:
        check_python_snippet(argv[2])
    elif argv[0] == "celery":
        check_celery(argv[1:])
    elif argv[0] == "uvicorn":
        check_uvicorn(argv[1:])
    else:
        pytest.fail(f"unexpected command in a project service: {argv}")


@pytest.mark.parametrize("service_name", sorted(project_services()))
def test_every_command_a_project_service_runs_exists(service_name):
    commands = commands_of(project_services()[service_name])
    assert commands, f"{service_name} runs no command"
    for argv in commands:
        check_command(argv)


def test_the_stack_has_every_process_the_topology_needs():
    services = compose()["services"]
    assert {"postgres", "redis", "migrate", "web", "worker", "ratings", "beat", "flower", "tgi", "ollama"} <= set(services)
    worker = services["worker"]["command"]
    assert worker[worker.index("--pool") + 1] == "threads"  # long streaming I/O: threads, not prefork
    assert int(interpolate(worker[worker.index("--concurrency") + 1])) >= 32
    # Refreshes (CPU-bound numpy) run in their own worker, never among the streaming threads.
    ratings = [interpolate(part) for part in services["ratings"]["command"]]
    assert worker[worker.index("-Q") + 1] == "celery" and ratings[ratings.index("-Q") + 1] == "ratings"
    # One refresh at a time, in a thread of the worker's main process: its rating pool may start children.
    assert ratings[ratings.index("--pool") + 1] == "threads" and ratings[ratings.index("--concurrency") + 1] == "1"
    assert int(interpolate(services["ratings"]["environment"]["LEADERBOARD_RATING_PROCESSES"])) >= 2
    node = ratings[ratings.index("-n") + 1].split("@")[0]
    assert f"--node {node}@" in " ".join(services["ratings"]["healthcheck"]["test"])
    web = services["web"]["command"]
    assert int(interpolate(web[web.index("--workers") + 1])) > 1
    assert services["web"]["environment"]["PROMETHEUS_MULTIPROC_DIR"] in services["web"]["tmpfs"]
    assert services["flower"]["profiles"] == ["flower"]
    for name in ("tgi", "ollama"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices and all("gpu" in device["capabilities"] for device in devices)
    long_running = set(services) - {"migrate", "beat"}
    assert all("healthcheck" in services[name] for name in long_running), long_running
    assert "worker_health" in " ".join(services["worker"]["healthcheck"]["test"])
    # Only web is published to all interfaces; Flower only on loopback; model servers not at all.
    published = {name: svc.get("ports", []) for name, svc in services.items() if svc.get("ports")}
    assert set(published) == {"web", "flower"}
    assert all(port.startswith("127.0.0.1:") for port in published["flower"])


def test_every_variable_the_settings_read_is_in_env_example():
    missing = settings_variables() - set(env_example())
    assert not missing, f"add to docker/env.example: {sorted(missing)}"


def test_every_env_example_variable_is_read_by_settings_or_compose():
    unread = set(env_example()) - settings_variables() - compose_interpolated()
    assert not unread, f"docker/env.example lists variables nothing reads: {sorted(unread)}"


def test_every_variable_compose_uses_is_in_env_example_or_read_by_settings():
    missing = compose_interpolated() - set(env_example())
    assert not missing, f"compose interpolates variables docker/env.example does not list: {sorted(missing)}"
    for name, service in project_services().items():
        for variable in service.get("environment", {}):
            assert variable in settings_variables() or variable in LIBRARY_VARIABLES, (name, variable)


def test_env_example_holds_no_real_secret_and_loads_as_settings(tmp_path):
    example = env_example()
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "METRICS_TOKEN", "FLOWER_BASIC_AUTH"):
        value, is_set = example[name]
        assert is_set and "change-me" in value, name
    assert "change-me" in example["DATABASE_URL"][0]
    # Every value, the documented defaults included, must be accepted by the settings.
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "arena.settings"}
    env.update({name: value for name, (value, _) in example.items()})
    env["SQLITE_PATH"] = str(tmp_path / "unused.sqlite3")
    env["STATIC_ROOT"] = str(tmp_path / "static")
    probe = ("import django; django.setup(); from django.conf import settings as s; "
             "print(s.DEBUG, s.METRICS_TOKEN == 'change-me-to-a-long-random-token', 'localhost' in s.ALLOWED_HOSTS)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["False", "True", "True"]


def test_the_checks_themselves_catch_a_wrong_command():
    with pytest.raises(AssertionError):
        check_manage_py(["no_such_command"])
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        check_manage_py(["worker_health", "--no-such-option"])
    with pytest.raises(AssertionError):
        check_celery(["-A", "workers", "worker", "--no-such-option"])
    with pytest.raises(Exception):
        check_uvicorn(["arena.asgi:no_such_application"])


def test_env_example_database_pool_is_the_settings_default(tmp_path):
    """The benchmarks and a fresh deployment run the same pool: env.example sets what the default is."""
    example = env_example()
    probe = ("import django, json; django.setup(); from django.conf import settings as s; "
             "print(json.dumps(s.DATABASES['default']['OPTIONS'].get('pool')))")
    base = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "arena.settings", "SECRET_KEY": "x" * 50,
            "DATABASE_URL": example["DATABASE_URL"][0], "REDIS_URL": example["REDIS_URL"][0],
            "SQLITE_PATH": str(tmp_path / "unused.sqlite3")}
    pools = []
    for extra in ({}, {name: value for name, (value, _) in example.items() if name.startswith("DB_")}):
        result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, env={**base, **extra},
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr[-3000:]
        pools.append(json.loads(result.stdout))
    assert pools[0] == pools[1]
    assert pools[0]["max_size"] == int(example["DB_POOL_MAX_SIZE"][0])
    assert pools[0]["timeout"] == float(example["DB_POOL_TIMEOUT_SECONDS"][0])
