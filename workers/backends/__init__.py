"""Backend adapters: one interface (see base.py), one adapter per server kind."""
from __future__ import annotations

from importlib import import_module

from workers.backends.base import (
    KINDS,
    BackendAdapter,
    BackendError,
    DecodingParams,
    Delta,
    DiscoveredModel,
    Endpoint,
    Finish,
    Message,
    StreamItem,
)

_ADAPTER_MODULES = {"tgi": "workers.backends.tgi", "ollama": "workers.backends.ollama",
                    "openai": "workers.backends.openai_compat"}


def get_adapter(kind: str) -> BackendAdapter:
    if kind not in _ADAPTER_MODULES:
        raise ValueError(f"unknown backend kind {kind!r}; expected one of {', '.join(KINDS)}")
    return import_module(_ADAPTER_MODULES[kind]).ADAPTER


__all__ = ["KINDS", "BackendAdapter", "BackendError", "DecodingParams", "Delta", "DiscoveredModel", "Endpoint",
           "Finish", "Message", "StreamItem", "get_adapter"]
