"""Writing many rows at once: the bulk paths of ingestion and batches (see `delivery.dialect`).

PostgreSQL gets forms that skip Django's per-row model instances and its quoting of every value into
the statement's text (JSON records, COPY, parameters bound on the server); SQLite gets
`bulk_create`. Each function means the same on both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import orjson
from django.db import connection
from django.db.models import Field, Model
from django.utils import timezone

from delivery.dialect import is_postgresql, model_columns, server_side_cursor


def bulk_write(
    model: type[Model], rows: Sequence[Mapping[str, object]], *, unique: tuple[str, ...] = (),
    update: tuple[str, ...] = (),
) -> None:
    """Insert `rows` (column → value) in their order; on a conflict over `unique`,
    update the `update` columns, or skip the row when `update` is empty."""
    if not rows:
        return
    if is_postgresql():
        _bulk_write_postgresql(model, rows, unique=unique, update=update)
        return
    model._default_manager.bulk_create(
        [model(**row) for row in rows], ignore_conflicts=bool(unique) and not update,
        update_conflicts=bool(update), unique_fields=unique or None, update_fields=update or None,
    )


def _bulk_write_postgresql(
    model: type[Model], rows: Sequence[Mapping[str, object]], *, unique: tuple[str, ...],
    update: tuple[str, ...],
) -> None:
    # Django's bulk_create spends most of its time building model instances and
    # adapting values one by one; here the rows travel as one JSON parameter,
    # several times faster for thousands of rows. Timestamps are filled in.
    quote = connection.ops.quote_name
    fields = model_columns(model._meta)
    columns = list(rows[0])
    stamps = [column for column, field in fields.items() if column not in columns and _is_timestamp(field)]
    record = ", ".join(f"{quote(column)} {fields[column].db_type(connection)}" for column in columns)
    names = ", ".join(quote(column) for column in columns)
    # Only quoted names from the model go into the text; every value is a parameter.
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(map(quote, columns + stamps))}) "  # noqa: S608
        f"SELECT {names}{', %s' * len(stamps)} "
        f"FROM ROWS FROM (json_to_recordset(%s::json) AS ({record})) "
        f"WITH ORDINALITY AS r({names}, row_number_) ORDER BY r.row_number_"
    )
    if unique:
        updates = ", ".join(f"{quote(column)} = EXCLUDED.{quote(column)}" for column in update)
        sql += f" ON CONFLICT ({', '.join(map(quote, unique))}) " + (f"DO UPDATE SET {updates}" if update
                                                                      else "DO NOTHING")
    with connection.cursor() as cursor:
        cursor.execute(sql, [timezone.now()] * len(stamps) + [orjson.dumps(rows).decode()])


def _is_timestamp(field: Field[Any, Any]) -> bool:
    return bool(getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False))


def insert_pairs(model: type[Model], *, columns: tuple[str, str], rows: list[tuple[int, str]],
                 batch_size: int) -> None:
    """Insert (integer, text) `rows` into `columns` of `model`'s table.

    PostgreSQL: COPY, no model instance per row and no statement to parse (a batch writes millions
    of rows); elsewhere `bulk_create`, `batch_size` rows a statement.
    """
    if not is_postgresql():
        model._default_manager.bulk_create((model(**dict(zip(columns, row, strict=True))) for row in rows),
                                  batch_size=batch_size)
        return
    quote = connection.ops.quote_name
    statement = f"COPY {quote(model._meta.db_table)} ({', '.join(map(quote, columns))}) FROM STDIN"
    # The usual case, a million rows a batch: one block of text, no call per row. It is valid as is when
    # the texts hold none of the characters COPY reads specially: no escape, and just the separators.
    block = "".join([f"{number}\t{text}\n" for number, text in rows])
    is_plain = "\\" not in block and "\r" not in block and block.count("\t") == block.count("\n") == len(rows)
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        if is_plain:
            copy.write(block.encode())
        else:
            for row in rows:
                copy.write_row(row)  # psycopg escapes what COPY's text format would read otherwise


def insert_bound(objects: Sequence[Model]) -> None:
    """`bulk_create(objects)` (primary keys set) for rows with large binary values: documents.

    PostgreSQL: one statement whose values travel as arrays bound on the server, in binary, one
    array a column. Django quotes every value into the statement's text instead, and PostgreSQL then
    parses it: a 2 MB body cost 48 ms that way against 12 ms bound (`scripts/bench_batch.py`), a
    real-time claim's 25 documents 2-4 ms of the worker's CPU against 0.3 ms. Each field's value is
    what Django would write (`pre_save`, then `get_db_prep_save`: auto_now_add, defaults, UUIDs).
    For models with an auto primary key and no `db_default` or generated field.
    """
    if not objects:
        return
    model = type(objects[0])
    if not is_postgresql():
        model._default_manager.bulk_create(objects)
        return
    meta = model._meta
    fields = [field for field in meta.concrete_fields if field is not meta.pk]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(cast(str, field.column)) for field in fields)  # concrete: never None
    arrays = ", ".join(f"%b::{field.db_type(connection)}[]" for field in fields)
    statement = (f"INSERT INTO {quote(meta.db_table)} ({columns}) "  # noqa: S608 - quoted model names only
                 f"SELECT {columns} FROM unnest({arrays}) WITH ORDINALITY AS r({columns}, row_number_) "
                 f"ORDER BY r.row_number_ RETURNING {quote(cast(str, meta.pk.column))}")
    values = [[field.get_db_prep_save(field.pre_save(obj, True), connection) for obj in objects]  # noqa: FBT003
              for field in fields]
    with server_side_cursor() as cursor:
        cursor.execute(statement, values)
        for obj, (pk,) in zip(objects, cursor.fetchall(), strict=True):
            obj.pk = pk
            obj._state.adding, obj._state.db = False, connection.alias
