"""Text-so-far of generations in flight, for browsers that reconnect mid-stream.

Each published batch is recorded with its sequence number, atomically, so a reconnecting client
can take a snapshot (text up to seq N) and then apply only live deltas with seq > N: nothing lost,
nothing doubled. Redis holds it in the production topology (any worker writes, any web process
reads); a process-local dict does in the embedded default, where everything is one process.
"""
from __future__ import annotations

import threading

from django.conf import settings

TTL_SECONDS = 3600
_local: dict[str, tuple[int, str]] = {}
_local_lock = threading.Lock()
_client = None


def _redis():
    global _client
    if _client is None:
        import redis

        _client = redis.Redis.from_url(settings.REDIS_URL)
    return _client


def _key(name: str) -> str:
    return f"arena:partial:{name}"


# One atomic command per batch instead of a MULTI of four (every published batch runs it).
_RECORD = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('APPEND', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
"""
_record_script = None


def record_by_layer(layer) -> bool:
    """Whether ``layer`` can record a batch in the call that sends it (``group_send_many``): the
    production channel layer on the very Redis the records live in."""
    return (bool(settings.REDIS_URL) and hasattr(layer, "group_send_many") and layer.one_call_group_send()
            and layer.hosts[0].get("address") == settings.REDIS_URL)


def record_args(name: str, seq: int, text: str) -> tuple[str, str, int, str, int]:
    """What the layer's ``group_send_many`` stores for batch ``seq`` of ``name``: as ``record`` does."""
    return _key(name) + ":seq", _key(name) + ":text", seq, text, TTL_SECONDS


def record(name: str, seq: int, text: str) -> None:
    global _record_script
    if settings.REDIS_URL:
        if _record_script is None:
            _record_script = _redis().register_script(_RECORD)
        seq_key, text_key, *args = record_args(name, seq, text)
        _record_script(keys=[seq_key, text_key], args=args)
        return
    with _local_lock:
        old_seq, old_text = _local.get(name, (0, ""))
        _local[name] = (seq, old_text + text)


def snapshot(name: str) -> tuple[int, str]:
    if settings.REDIS_URL:
        pipe = _redis().pipeline(transaction=True)
        pipe.get(_key(name) + ":seq")
        pipe.get(_key(name) + ":text")
        seq, text = pipe.execute()
        return int(seq or 0), (text or b"").decode("utf-8")
    with _local_lock:
        return _local.get(name, (0, ""))


def forget(name: str) -> None:
    if settings.REDIS_URL:
        _redis().delete(_key(name) + ":seq", _key(name) + ":text")
        return
    with _local_lock:
        _local.pop(name, None)
