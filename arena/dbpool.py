"""Database connections during long waits on something else (a model's stream, a lock).

With the connection pool (the default on PostgreSQL, see settings), a thread keeps its
connection until it is closed; a worker thread streaming an answer for seconds would hold one
all that time while it only needs it for a few short queries. ``release_connection`` hands it
back to the pool; the next query takes one again. Without a pool it does nothing: closing would
only mean opening a new connection for the next query.
"""
from __future__ import annotations

from django.db import connection


def pooled() -> bool:
    return getattr(connection, "pool", None) is not None


def release_connection() -> None:
    """Give this thread's connection back to the pool, outside a transaction; no-op otherwise."""
    if connection.connection is not None and not connection.in_atomic_block and pooled():
        connection.close()
