"""Run the backend emulator on loopback until Ctrl-C.

    python manage.py run_emulator [--port P] [--host H] [--config models.json] [--api-key K]

The config file is a JSON list of model definitions (the fields of ``EmulatedModel``; ``fault`` is
optional, e.g. ``{"kind": "error_mid_stream", "after_tokens": 5}``). Without it the demo models run.
Prints the listening address, then one line per protocol with each model's base URL.
"""
from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from workers.emulator import DEMO_MODELS, KINDS, EmulatedModel, EmulatorServer


def load_models(path: str) -> list[EmulatedModel]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read model config {path}: {exc}") from exc
    if not isinstance(data, list) or not data:
        raise CommandError("the model config must be a non-empty JSON list of model objects")
    try:
        return [EmulatedModel.from_dict(entry) for entry in data]
    except (KeyError, TypeError, ValueError) as exc:
        raise CommandError(f"bad model definition in {path}: {exc}") from exc


class Command(BaseCommand):
    help = "Serve emulated TGI, Ollama and OpenAI-compatible backends on loopback (fake models)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8089, help="port; 0 picks a free one (default 8089)")
        parser.add_argument("--config", help="JSON file with a list of model definitions")
        parser.add_argument("--api-key", default="", help="require 'Authorization: Bearer <key>' on generation routes")

    def handle(self, *args, **options) -> None:
        models = load_models(options["config"]) if options["config"] else list(DEMO_MODELS)
        server = EmulatorServer(models=models, host=options["host"], port=options["port"],
                                api_key=options["api_key"] or None)
        try:
            server.start()
        except OSError as exc:
            raise CommandError(f"cannot listen on {options['host']}:{options['port']}: {exc}") from exc
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.stdout.write(f"Emulator listening on {server.base_url}"
                              + (" (api key required)" if server.api_key else ""))
            for kind in KINDS:
                urls = "  ".join(f"{m.name}={server.url_for(kind, m.name)}" for m in models)
                self.stdout.write(f"{kind}: {urls}")
            self.stdout.write("Press Ctrl-C to stop.")
            self.stdout.flush()
            while not stop.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            server.stop()
            self.stdout.write("Emulator stopped.")
