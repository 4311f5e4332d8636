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


class ModelColumns:
    """The columns of several models side by side in one written-out SELECT, and the instances
    back from each row, with the values converted as the ORM converts them (times, JSON, UUIDs,
    booleans and decimals on SQLite)."""

    def __init__(self, *parts: tuple[type, str]) -> None:
        self.parts = parts  # (model, table alias in the statement)
        self._converters: dict[str, list[list]] = {}

    def select_list(self) -> str:
        return ", ".join(f"{alias}.{connection.ops.quote_name(field.column)}"
                         for model, alias in self.parts for field in model._meta.concrete_fields)

    def _conversions(self) -> list[list]:
        found = self._converters.get(connection.vendor)
        if found is None:
            found = []
            for model, alias in self.parts:
                per_model = []
                for position, field in enumerate(model._meta.concrete_fields):
                    expression = field.get_col(alias)
                    for convert in (connection.ops.get_db_converters(expression)
                                    + expression.get_db_converters(connection)):
                        per_model.append((position, convert, expression))
                found.append(per_model)
            self._converters[connection.vendor] = found
        return found

    def instances(self, row) -> list:
        """One instance of each model, in the order given, from ``row``."""
        built = []
        start = 0
        for (model, _alias), conversions in zip(self.parts, self._conversions()):
            fields = model._meta.concrete_fields
            values = list(row[start:start + len(fields)])
            for position, convert, expression in conversions:
                values[position] = convert(values[position], expression, connection)
            built.append(model.from_db(connection.alias, [field.attname for field in fields], values))
            start += len(fields)
        return built
