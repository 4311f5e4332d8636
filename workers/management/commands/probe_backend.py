"""Send one prompt to a model server through our adapter and report what came back, and how fast.

    python manage.py probe_backend --kind tgi --url http://gpu1:3000 --prompt "Hello"
    python manage.py probe_backend --kind ollama --url http://gpu2:11434 --model llama3.2 --json

The bearer token is read from an environment variable (``--token-env``), never from the command
line, where other users could read it in the process list.
"""
from __future__ import annotations

import json
import os

from django.core.management.base import BaseCommand, CommandError, CommandParser

from workers.backends import KINDS, BackendError, DecodingParams, Delta, Endpoint, Finish, Message, get_adapter
from workers.backends.base import API_MODES


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Command(BaseCommand):
    help = "Stream one answer from a TGI, Ollama or OpenAI-compatible server and print its timing."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kind", required=True, choices=KINDS, help="server protocol")
        parser.add_argument("--url", required=True, help="server base URL, e.g. http://gpu1:3000")
        parser.add_argument("--model", default="", help="model name on the server (optional for TGI)")
        parser.add_argument("--prompt", default="Say hello in one short sentence.")
        parser.add_argument("--max-new-tokens", type=int, default=64)
        parser.add_argument("--api", choices=API_MODES, default="chat",
                            help="chat (server-side chat template) or completion (raw prompt, TGI only)")
        parser.add_argument("--token-env", default="", metavar="VAR",
                            help="name of an environment variable holding the bearer token")
        parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of temperature 0.7")
        parser.add_argument("--json", action="store_true",
                            help="print only one JSON object: text, finish_reason, output_tokens, ttft_ms, tpot_ms")

    def handle(self, *args, **options) -> None:
        token = ""
        if options["token_env"]:
            token = os.environ.get(options["token_env"], "")
            if not token:
                raise CommandError(f"The environment variable {options['token_env']} is not set or empty.")
        model = options["model"] or ("tgi" if options["kind"] == "tgi" else "")
        if not model:
            raise CommandError(f"--model is required for {options['kind']} servers.")
        if options["max_new_tokens"] < 1:
            raise CommandError("--max-new-tokens must be at least 1.")
        try:
            endpoint = Endpoint(kind=options["kind"], base_url=options["url"], model_id=model, auth_token=token,
                                api=options["api"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        params = DecodingParams(greedy=options["greedy"], max_new_tokens=options["max_new_tokens"])
        as_json = options["json"]

        chunks: list[str] = []
        finish: Finish | None = None
        try:
            for item in get_adapter(endpoint.kind).stream(endpoint, [Message("user", options["prompt"])], params):
                if isinstance(item, Delta):
                    chunks.append(item.text)
                    if not as_json:
                        self.stdout.write(item.text, ending="")
                        self.stdout.flush()
                elif isinstance(item, Finish):
                    finish = item
        except BackendError as exc:
            if chunks and not as_json:
                self.stdout.write("")
            message = str(exc).replace(token, "[redacted]") if token else str(exc)
            raise CommandError(_one_line(f"[{exc.code or 'error'}] {message}")) from None
        if finish is None:
            raise CommandError("The stream ended without finishing.")

        text = "".join(chunks)
        if as_json:
            self.stdout.write(json.dumps({
                "text": text,
                "finish_reason": finish.finish_reason,
                "output_tokens": finish.output_tokens,
                "ttft_ms": _rounded(finish.ttft_ms),
                "tpot_ms": _rounded(finish.tpot_ms),
            }))
            return
        self.stdout.write("")
        self.stdout.write("-" * 40)
        self.stdout.write(f"finish reason:         {finish.finish_reason}")
        self.stdout.write(f"time to first token:   {_ms(finish.ttft_ms)}")
        rate = f" ({1000.0 / finish.tpot_ms:.1f} tokens/s)" if finish.tpot_ms else ""
        self.stdout.write(f"time per output token: {_ms(finish.tpot_ms)}{rate}")
        tokens = f"{_count(finish.input_tokens)} in, {_count(finish.output_tokens)} out"
        self.stdout.write(f"tokens:                {tokens}")
        self.stdout.write(f"total:                 {_ms(finish.total_ms)}")


def _rounded(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def _ms(value: float | None) -> str:
    return f"{value:.1f} ms" if value is not None else "n/a"


def _count(value: int | None) -> str:
    return str(value) if value is not None else "?"
