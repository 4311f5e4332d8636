"""Structured logs: every record carries the battle it belongs to, and prints as one JSON object.

``battle_context(public_id)`` sets the battle for the code it wraps (a worker's generation, a
consumer's frame); every log record made inside, by any logger, gets it as ``record.battle``.
Ids only: contender names stay out of log context (logs are for operators, but a battle id is
all one needs to find the rest in the admin).
"""
from __future__ import annotations

import contextvars
import json
import logging
from contextlib import contextmanager
from datetime import datetime, timezone

_battle: contextvars.ContextVar[str] = contextvars.ContextVar("log_battle", default="")
_installed = False


@contextmanager
def battle_context(public_id) -> None:
    token = _battle.set(str(public_id) if public_id else "")
    try:
        yield
    finally:
        _battle.reset(token)


def install_record_factory() -> None:
    """Give every log record a ``battle`` attribute (empty outside a battle). Idempotent."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        if not hasattr(record, "battle"):
            record.battle = _battle.get()
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, battle, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "battle": getattr(record, "battle", ""),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
