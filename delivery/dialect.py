"""The database dialect: every difference between PostgreSQL and SQLite, in one place (with its
bulk writes beside it, in `delivery.bulk`).

PostgreSQL runs production; SQLite is what `make run` falls back to when no PostgreSQL is
configured (CONTRACT §6). Each function here means the same on both. PostgreSQL gets the form that
stays fast on large sets of rows, or that takes a lock; SQLite gets Django's portable form and
needs no lock, because it lets one writer in at a time (every transaction begins `IMMEDIATE`,
see `aamdest.settings`) and has no other connection to exclude.

The stage modules never look at `connection.vendor`. Where a stage keeps a set-based PostgreSQL
query of its own beside a portable one (`delivery.intake.storage`, `delivery.batch.reading`,
`delivery.sending.rounds`), it asks `is_postgresql()`. `make test` runs the stage tests on both.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
from django.apps import apps
from django.db import DatabaseError, IntegrityError, connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Aggregate, Count, Field, FloatField, Lookup, Model, QuerySet
from django.db.models.options import Options
from django.db.models.sql.compiler import SQLCompiler

Percentiles = tuple[int, list[float | None]]  # (count of values, one percentile per fraction)


def is_postgresql() -> bool:
    return connection.vendor == "postgresql"


# ---- reading a refused write -------------------------------------------------------------------

_SQLITE_CHECK = re.compile(r"CHECK constraint failed: (?P<name>\w+)")
_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?P<columns>[\w., ]+)")


def violated_constraint(error: IntegrityError) -> str | None:
    """The PostgreSQL name of the constraint `error` broke (SQLite's message mapped to it), or None."""
    name = getattr(getattr(error.__cause__, "diag", None), "constraint_name", None)
    if name is not None:
        return str(name)
    message = str(error)
    if match := _SQLITE_CHECK.search(message):
        return match["name"]
    if match := _SQLITE_UNIQUE.search(message):
        table, columns = _table_and_columns(match["columns"])
        return _unique_constraint_names().get((table, columns))
    return None


def _table_and_columns(listed: str) -> tuple[str, tuple[str, ...]]:
    qualified = [part.strip() for part in listed.split(",")]
    return qualified[0].rpartition(".")[0], tuple(sorted(part.rpartition(".")[2] for part in qualified))


def _unique_constraint_names() -> dict[tuple[str, tuple[str, ...]], str]:
    """(table, sorted columns) → the name PostgreSQL gives that unique constraint, for every model."""
    names: dict[tuple[str, tuple[str, ...]], str] = {}
    for model in apps.get_models():
        table, meta = model._meta.db_table, model._meta
        for column, field in model_columns(meta).items():
            if field.primary_key or field.unique:
                suffix = "pkey" if field.primary_key else f"{column}_key"
                names[(table, (column,))] = f"{table}_{suffix}"
        for constraint in meta.constraints:
            fields = getattr(constraint, "fields", ())
            if fields:
                columns = tuple(sorted(_column(meta, name) for name in fields))
                names[(table, columns)] = str(constraint.name)
    return names


def model_columns(meta: Options[Any]) -> dict[str, Field[Any, Any]]:
    """Column → field, for every concrete field (concrete: the field has a column)."""
    return {field.column: field for field in meta.concrete_fields if field.column is not None}


def _column(meta: Options[Any], name: str) -> str:
    """The column of the field `name` (a constraint lists fields that have one)."""
    field = meta.get_field(name)
    column = getattr(field, "column", None)  # a reverse relation has no column attribute at all
    if not isinstance(column, str):
        raise TypeError(f"{meta.label}.{name} has no database column.")
    return column


# ---- matching a list of values ------------------------------------------------------------------


class AnyOf(Lookup):
    """`field__any=values`: the rows whose field is one of `values`, passed as one parameter.

    `field__in` sends a placeholder per value and prepares each value on its own: for the
    claim's few hundred devices that cost more CPU than the query (Django's preparation and
    psycopg's parsing of a query text that never repeats). PostgreSQL gets `= ANY(array)`,
    SQLite `IN (SELECT value FROM json_each(json))`. Registered on every field by `delivery.apps`.
    """

    lookup_name = "any"
    prepare_rhs = False

    def as_sql(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper) -> tuple[str, Any]:
        lhs, params = self.process_lhs(compiler, connection)
        return f"{lhs} = ANY(%s)", (*params, list(self.rhs))

    def as_sqlite(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper) -> tuple[str, Any]:
        lhs, params = self.process_lhs(compiler, connection)
        values = orjson.dumps(list(self.rhs)).decode()
        return f"{lhs} IN (SELECT value FROM json_each(%s))", (*params, values)  # noqa: S608 - a column


@contextmanager
def server_side_cursor() -> Iterator[psycopg.Cursor[Any]]:
    """PostgreSQL only: a cursor on Django's connection (so in its transaction) binding on the server.

    Django's cursors bind on the client: each parameter is quoted into the query text, which
    Python builds and PostgreSQL parses again. For the arrays of a claim's rows, and its documents
    (bytes, as hex), that was the costliest part of writing them; here they travel as parameters
    (`%b`: in binary). Database errors are raised as Django's, as through its own cursors.
    """
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        yield cursor


# ---- locks ------------------------------------------------------------------------------------


def lock_table_against_writers(model: type[Model], *, lock_timeout: str) -> None:
    """Wait for the transactions writing to `model`'s table and hold new writers back until commit.

    PostgreSQL: a SHARE lock, given up after `lock_timeout` (an error). SQLite: nothing to do, the
    transaction already holds the one write lock.
    """
    if not is_postgresql():
        return
    table = connection.ops.quote_name(model._meta.db_table)
    give_up_lock_waits_after(lock_timeout)
    with connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {table} IN SHARE MODE")


def give_up_lock_waits_after(timeout: str) -> None:
    """Until commit, a wait for a lock longer than `timeout` raises instead (PostgreSQL; see
    `is_lock_given_up`). SQLite: nothing, its transactions queue on the one write lock."""
    if is_postgresql():
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [timeout])


def is_lock_given_up(error: DatabaseError) -> bool:
    """Whether `error` is a lock wait given up (`give_up_lock_waits_after`) or a deadlock's victim."""
    return getattr(error.__cause__, "sqlstate", None) in {"55P03", "40P01"}


def advisory_xact_lock(key: int) -> None:
    """Hold the advisory lock `key` exclusively until commit, waiting for it (PostgreSQL; SQLite:
    the transaction's write lock already excludes every other writer)."""
    if is_postgresql():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def try_advisory_xact_locks_shared(keys: Sequence[int]) -> bool:
    """Hold every advisory lock of `keys`, shared, until commit; False if a transaction holds one
    exclusively (PostgreSQL; SQLite: always True, as for `advisory_xact_lock`)."""
    if not is_postgresql() or not keys:
        return True
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT bool_and(pg_try_advisory_xact_lock_shared(key)) FROM unnest(%s::bigint[]) AS key",
            [list(keys)],
        )
        return bool(cursor.fetchone()[0])


# ---- percentiles ------------------------------------------------------------------------------


class PercentileCont(Aggregate):
    """PostgreSQL's continuous percentile: linear interpolation between the nearest values."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, *, fraction: float) -> None:
        # A float rendered by us, never user input: safe to place in the SQL text.
        super().__init__(expression, fraction=repr(float(fraction)))


def percentiles(rows: QuerySet[Any], *, group: str, value: str, fractions: Sequence[float]
                ) -> dict[Any, Percentiles]:
    """Per distinct `group` of `rows`: the count and the continuous percentiles of `value`, one per fraction.

    PostgreSQL aggregates with `percentile_cont`; SQLite, which has none, reads the values and
    interpolates the same way in Python (`percentiles_in_python`).
    """
    if not is_postgresql():
        return percentiles_in_python(rows.values_list(group, value), fractions=fractions)
    names = [f"p{index}" for index in range(len(fractions))]
    aggregates = {name: PercentileCont(value, fraction=fraction) for name, fraction in zip(names, fractions,
                                                                                             strict=True)}
    found = rows.values(group).annotate(count_=Count("pk"), **aggregates).order_by()
    return {row[group]: (row["count_"], [row[name] for name in names]) for row in found}


def percentiles_in_python(rows: Iterable[tuple[Hashable, float]], *, fractions: Sequence[float]
                          ) -> dict[Any, Percentiles]:
    """`percentiles` over (group, value) pairs, computed in Python."""
    values: dict[Hashable, list[float]] = defaultdict(list)
    for key, number in rows:
        values[key].append(float(number))
    for numbers in values.values():
        numbers.sort()
    return {key: (len(numbers), [percentile(values=numbers, fraction=fraction) for fraction in fractions])
            for key, numbers in values.items()}


def percentile(*, values: Sequence[float], fraction: float) -> float | None:
    """The same interpolation as `percentile_cont` over sorted `values`; None when empty."""
    if not values:
        return None
    position = fraction * (len(values) - 1)
    lower, upper = math.floor(position), math.ceil(position)
    return values[lower] + (values[upper] - values[lower]) * (position - lower)
