"""Model rows on the raw sqlite3 connection of the hot write lane (`Database.write_raw`).

Through the ORM and aiosqlite a statement costs about 0.7 ms of CPU on the box's class of
machine, plus a thread round trip; a teacher command is eight statements. The hot paths run
their whole transaction on the writer thread's own connection instead, with SQL text and value
conversion derived once from the model tables (the bind and result processors SQLAlchemy itself
uses), so rows read here equal rows the ORM reads and rows written here read back the same.
Objects are the ordinary model classes, transient (never attached to an ORM session).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, Generic, TypeVar, cast

from sqlalchemy import inspect
from sqlalchemy.dialects import sqlite

from vrlms_edge.store.models import Base

M = TypeVar("M", bound=Base)
Processor = Callable[[Any], Any] | None

_DIALECT: Final = sqlite.dialect()
# Rows per multi-row statement. sqlite3 releases the GIL around every statement step, and
# taking it back while the event loop runs Python costs up to the interpreter's switch
# interval: executemany (one step per row) stored 3-9k events/s next to a busy loop. Rows are
# split into statements of these sizes, largest first, so only these shapes are prepared
# (1024 rows x 14 columns stays below SQLite's 32766 variables).
ROW_SHAPES: Final = (1024, 256, 64, 16, 4, 1)


@functools.cache
def _rows_sql(head: str, marks: str, tail: str, count: int) -> str:
    return head + ", ".join([marks] * count) + tail


def row_chunks(count: int) -> Iterator[tuple[int, int]]:
    """(start, size) of each statement for `count` rows, sizes from ROW_SHAPES, largest first."""
    at = 0
    for size in ROW_SHAPES:
        while count - at >= size:
            yield at, size
            at += size


def execute_rows(
    conn: sqlite3.Connection, head: str, marks: str, tail: str, rows: Sequence[Sequence[Any]]
) -> None:
    """Run `head VALUES-rows tail` (head ends with "VALUES ", `marks` is one row's "(?, ?)")
    for all rows in a few multi-row statements."""
    for at, size in row_chunks(len(rows)):
        sql = _rows_sql(head, marks, tail, size)
        conn.execute(sql, [value for row in rows[at : at + size] for value in row])


@functools.cache
def column_keys(model: type[Base]) -> tuple[str, ...]:
    """The attribute names of a model's columns, in mapper order."""
    return tuple(attr.key for attr in inspect(model).column_attrs)


def column_value(row: Base, key: str) -> Any:
    """A column's value: straight from the instance's dict, where the ORM keeps loaded and
    assigned values (an instrumented attribute read costs several times more); an attribute
    the ORM has not loaded (expired, deferred) goes through the attribute."""
    values = row.__dict__
    return values[key] if key in values else getattr(row, key)


class RawTable(Generic[M]):
    """One model's table: get by primary key or condition, insert, upsert, update changed
    columns."""

    def __init__(self, model: type[M]) -> None:
        mapper = inspect(model)
        self.model = model
        self._new_instance = cast(Callable[[], M], mapper.class_manager.new_instance)
        self.name: str = model.__tablename__
        attrs = list(mapper.column_attrs)
        self.keys = column_keys(model)
        columns = [a.columns[0] for a in attrs]
        self._column = {a.key: c.name for a, c in zip(attrs, columns, strict=True)}
        self._to_db: dict[str, Processor] = {
            a.key: c.type.dialect_impl(_DIALECT).bind_processor(_DIALECT)
            for a, c in zip(attrs, columns, strict=True)
        }
        self._from_db: list[tuple[str, Processor]] = [
            (a.key, c.type.dialect_impl(_DIALECT).result_processor(_DIALECT, None))
            for a, c in zip(attrs, columns, strict=True)
        ]
        # Python-side defaults: a value, or a function SQLAlchemy wrapped to take a context.
        self._defaults: dict[str, Any] = {
            a.key: c.default.arg
            for a, c in zip(attrs, columns, strict=True)
            if c.default is not None
        }
        self._onupdate: dict[str, Callable[[Any], Any]] = {
            a.key: c.onupdate.arg
            for a, c in zip(attrs, columns, strict=True)
            if c.onupdate is not None
        }
        self._pk_key: str = mapper.get_property_by_column(mapper.primary_key[0]).key
        pk = mapper.primary_key[0].name
        # Every column, in `keys` order (what SELECT * and RETURNING give `values`).
        self.column_list = ", ".join(self._column[k] for k in self.keys)
        self._select_all = f"SELECT {self.column_list} FROM {self.name}"
        self._select = f"{self._select_all} WHERE {pk} = ?"
        self._where_pk = f" WHERE {pk} = ?"
        marks = ", ".join("?" for _ in self.keys)
        self._insert = f"INSERT INTO {self.name} ({self.column_list}) VALUES ({marks})"
        self._updates: dict[tuple[str, ...], str] = {}
        self._upserts: dict[tuple[tuple[str, ...], ...], tuple[str, str, str]] = {}

    def bind(self, key: str, value: Any) -> Any:
        """`value` of column `key` as sqlite3 takes it (the model's bind processor)."""
        convert = self._to_db[key]
        return value if convert is None or value is None else convert(value)

    def get(self, conn: sqlite3.Connection, row_id: Any) -> M | None:
        found = conn.execute(self._select, (row_id,)).fetchone()
        return None if found is None else self.row(found)

    def values(self, found: Sequence[Any]) -> dict[str, Any]:
        """A row's columns as the model holds them, {key: value}; `found` is the row as
        sqlite3 gives it, its columns in `keys` order (`column_list`)."""
        return {
            key: value if convert is None or value is None else convert(value)
            for (key, convert), value in zip(self._from_db, found, strict=True)
        }

    def row(self, found: Sequence[Any]) -> M:
        """A model object (transient) of a row as sqlite3 gives it (see `values`)."""
        # Filled in as the ORM's loader does (straight into __dict__): the constructor's
        # per-attribute change events cost more than the whole SELECT.
        row = self._new_instance()
        row.__dict__.update(self.values(found))
        return row

    def where(self, conn: sqlite3.Connection, condition: str, params: Sequence[Any]) -> list[M]:
        """Rows matching `condition` (SQL after WHERE, over this table's column names; it may
        end in ORDER BY/LIMIT)."""
        found = conn.execute(f"{self._select_all} WHERE {condition}", params)
        return [self.row(row) for row in found]

    def snapshot(self, row: M) -> dict[str, Any]:
        """The row's column values now (compare with `update(..., before=)`)."""
        return {key: column_value(row, key) for key in self.keys}

    def insert(self, conn: sqlite3.Connection, row: M) -> None:
        """Insert a new row; unset columns take the model's Python-side defaults (as the ORM
        would), and those are written back into `row`."""
        values = {key: column_value(row, key) for key in self.keys}
        for key, value in self._default_values(values):
            setattr(row, key, value)
            values[key] = value
        conn.execute(self._insert, self._bound(values))

    def insert_values(self, conn: sqlite3.Connection, values: dict[str, Any]) -> None:
        """Insert a row given as {key: value} that nobody reads back, without building a
        model object (its constructor costs more than the INSERT); missing keys take the
        model's Python-side defaults, which are written into `values`."""
        values.update(self._default_values(values))
        conn.execute(self._insert, self._bound(values))

    def _default_values(self, values: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
        for key, default in self._defaults.items():
            if values.get(key) is None:
                yield key, default(None) if callable(default) else default

    def _bound(self, values: Mapping[str, Any]) -> list[Any]:
        return [self.bind(key, values.get(key)) for key in self.keys]

    def update(self, conn: sqlite3.Connection, row: M, before: Mapping[str, Any]) -> bool:
        """Write the columns that differ from `before` (and stamp `onupdate` columns);
        False when nothing changed."""
        changed = [k for k in self.keys if column_value(row, k) != before[k]]
        if not changed:
            return False
        for key, stamp in self._onupdate.items():
            if key not in changed:
                setattr(row, key, stamp(None))
                changed.append(key)
        shape = tuple(changed)
        sql = self._updates.get(shape)
        if sql is None:
            sets = ", ".join(f"{self._column[k]} = ?" for k in shape)
            sql = self._updates[shape] = f"UPDATE {self.name} SET {sets}{self._where_pk}"
        params = [self.bind(k, column_value(row, k)) for k in shape]
        conn.execute(sql, [*params, column_value(row, self._pk_key)])
        return True

    def upsert(
        self,
        conn: sqlite3.Connection,
        rows: list[dict[str, Any]],
        *,
        conflict: tuple[str, ...],
        update: tuple[str, ...],
    ) -> None:
        """Insert rows given as {key: value} (all with the same keys; no defaults filled in);
        a row whose `conflict` columns exist already updates `update` instead."""
        if not rows:
            return
        keys = tuple(rows[0])
        shape = (keys, conflict, update)
        statement = self._upserts.get(shape)
        if statement is None:
            names = ", ".join(self._column[k] for k in keys)
            target = ", ".join(self._column[k] for k in conflict)
            sets = ", ".join(f"{self._column[k]} = excluded.{self._column[k]}" for k in update)
            statement = self._upserts[shape] = (
                f"INSERT INTO {self.name} ({names}) VALUES ",
                "(" + ", ".join("?" for _ in keys) + ")",
                f" ON CONFLICT ({target}) DO UPDATE SET {sets}",
            )
        execute_rows(conn, *statement, [[self.bind(k, row[k]) for k in keys] for row in rows])

    def set_column(self, conn: sqlite3.Connection, key: str, values: Mapping[Any, Any]) -> None:
        """Set one column of many rows ({primary key: value}), stamping `onupdate` columns."""
        stamps = {k: stamp(None) for k, stamp in self._onupdate.items() if k != key}
        keys = (key, *stamps)
        sets = ", ".join(f"{self._column[k]} = ?" for k in keys)
        conn.executemany(
            f"UPDATE {self.name} SET {sets}{self._where_pk}",
            [
                [self.bind(key, value)] + [self.bind(k, v) for k, v in stamps.items()] + [pk]
                for pk, value in values.items()
            ],
        )
