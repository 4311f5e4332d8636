"""Run the arena on its embedded default with demo accounts and demo model backends.

Migrates the SQLite database, creates demo accounts (printed; demo only), starts the backend
emulator on loopback with its demo models, registers them (one per protocol: TGI, Ollama,
OpenAI-compatible), registers a local Ollama's models if one answers, and serves the site.
Ctrl-C stops everything it started.
"""
from __future__ import annotations

import httpx
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from arena import roles
from arena.models import ArenaModel, BackendKind, BackendServer, DecodingPreset, Flavour
from arena.services.registry import check_all_servers, server_discover_models

DEMO_ACCOUNTS = [
    # (username, password, role): demo only, never used outside the embedded default.
    ("admin", "admin-demo", roles.ADMIN),
    ("rater", "rater-demo", roles.RATER),
    ("viewer", "viewer-demo", roles.VIEWER),
]
# Each demo model is served through a different protocol so all three adapters are exercised.
DEMO_PROTOCOLS = ["tgi", "ollama", "openai"]


def ensure_demo_accounts() -> None:
    for role in (roles.RATER, roles.VIEWER):
        Group.objects.get_or_create(name=role)
    for username, password, role in DEMO_ACCOUNTS:
        user, _ = User.objects.get_or_create(username=username)
        user.set_password(password)
        user.is_staff = user.is_superuser = role == roles.ADMIN
        user.save()
        if role != roles.ADMIN:
            user.groups.add(Group.objects.get(name=role))


def register_demo_models(emulator, models) -> list[ArenaModel]:
    preset, _ = DecodingPreset.objects.get_or_create(name="demo-balanced", defaults={"temperature": 0.7, "max_new_tokens": 256})
    contenders = []
    for index, model in enumerate(models):
        kind = DEMO_PROTOCOLS[index % len(DEMO_PROTOCOLS)]
        server, _ = BackendServer.objects.update_or_create(
            name=f"demo emulator ({kind}) {model.name}",
            defaults={"kind": kind, "base_url": emulator.url_for(kind, model.name), "max_concurrency": 16},
        )
        contender, _ = ArenaModel.objects.update_or_create(
            display_name=model.name,
            defaults={"server": server, "backend_model_id": "tgi" if kind == BackendKind.TGI else model.name,
                      "preset": preset, "organisation": "Demo Lab", "licence": "demo", "commercial_use": True,
                      "flavour": Flavour.CHAT, "context_length": model.context_length, "enabled": True,
                      "aliases": [model.name.split("-")[1] + " demo"]},
        )
        contenders.append(contender)
    return contenders


def register_local_ollama(host: str, stdout) -> None:
    try:
        httpx.get(f"{host.rstrip('/')}/api/version", timeout=1.0).raise_for_status()
    except httpx.HTTPError:
        stdout.write(f"No Ollama at {host} (set OLLAMA_HOST to use one); demo models only.")
        return
    server, _ = BackendServer.objects.update_or_create(
        name="local ollama", defaults={"kind": BackendKind.OLLAMA, "base_url": host.rstrip("/")}
    )
    report = server_discover_models(server=server)
    ArenaModel.objects.filter(server=server).update(enabled=True)
    stdout.write(f"Ollama at {host}: registered {len(report.found)} model(s): {', '.join(report.found)}")


class Command(BaseCommand):
    help = "Run the arena on its embedded default with demo accounts and demo backends."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--emulator-port", type=int, default=0, help="0 picks a free port")
        parser.add_argument("--no-serve", action="store_true", help="Set everything up, then exit (for checks).")

    def handle(self, *args, **options):
        if not settings.EMBEDDED:
            raise CommandError("The demo runs on the embedded default only; unset DATABASE_URL and REDIS_URL.")
        from workers.emulator import DEMO_MODELS, EmulatorServer

        call_command("migrate", interactive=False, verbosity=0)
        ensure_demo_accounts()
        emulator = EmulatorServer(models=list(DEMO_MODELS), host="127.0.0.1", port=options["emulator_port"])
        emulator.start()
        try:
            register_demo_models(emulator, DEMO_MODELS)
            register_local_ollama(settings.OLLAMA_HOST, self.stdout)
            counts = check_all_servers()
            url = f"http://{options['host']}:{options['port']}/"
            self.stdout.write(self.style.SUCCESS(f"Demo emulator on {emulator.base_url}; servers up: {counts['up']}"))
            self.stdout.write("Demo accounts (demo only):")
            for username, password, role in DEMO_ACCOUNTS:
                self.stdout.write(f"  {role:<7} {username} / {password}")
            self.stdout.write(self.style.SUCCESS(f"Arena on {url}  (admin: {url}admin/)  Ctrl-C stops everything."))
            if options["no_serve"]:
                return
            import uvicorn

            from workers.embedded_beat import EmbeddedBeat

            # No celery beat here: health checks, deadlines and refreshes run in this process.
            beat = EmbeddedBeat(settings.CELERY_BEAT_SCHEDULE).start()
            try:
                uvicorn.run("arena.asgi:application", host=options["host"], port=options["port"],
                            log_level="info", ws="websockets")
            finally:
                beat.stop()
        finally:
            emulator.stop()
