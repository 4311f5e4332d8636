"""Statements written out once as SQL, for the hottest reads and writes.

Building a small statement through the ORM's query compiler costs more CPU than PostgreSQL spends
running it; the few statements every vote, resume and WebSocket action runs are written out once,
with table and column names taken from the models. On PostgreSQL they go through a
server-side-binding cursor and, with the process's own connection pool (the default), are
prepared on each connection, so PostgreSQL stops parsing and planning them each time. Without the
pool (DB_POOL_MAX_SIZE=0, perhaps behind PgBouncer's transaction pooling, where a session's
prepared statements do not follow it) nothing is prepared. Errors surface as Django's own.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

from arena.dbpool import pooled

_PREPARE_ONLY_WHEN_ASKED = 2 ** 31 - 1


def table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def column(model, field: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(field).column)


@contextmanager
def execute(sql: str, params: list) -> Iterator:
    """Run one statement and hand over its cursor (prepared on PostgreSQL with our own pool)."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            yield cursor
        return
    import psycopg

    connection.ensure_connection()
    prepare = pooled()
    raw = connection.connection
    if prepare and raw.prepare_threshold is None:
        # Django turns preparing off on its connections; Django's own (client-side binding) cursors
        # never prepare anyway, so this lets only the statements asked for here be prepared.
        raw.prepare_threshold = _PREPARE_ONLY_WHEN_ASKED
    with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        cursor.execute(sql, params, prepare=prepare)
        yield cursor
