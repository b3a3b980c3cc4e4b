"""Shared plumbing of the repositories: statement helpers, row-to-record mapping and the base class."""

from __future__ import annotations

import functools
import sqlite3
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite

from storage._time import from_db, to_db
from storage.db import Database
from storage.errors import StorageError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Params = Sequence[Any] | Mapping[str, Any]
R = TypeVar("R")
D = TypeVar("D", bound="DataclassInstance")
#: Turns one row into the record a repository returns.
Decode = Callable[[sqlite3.Row], R]


async def fetch_all(conn: aiosqlite.Connection, sql: str, params: Params = ()) -> list[sqlite3.Row]:
    """Run a statement to completion and return its rows (also for ``... RETURNING``)."""
    return list(await conn.execute_fetchall(sql, params))


async def fetch_one(conn: aiosqlite.Connection, sql: str, params: Params = ()) -> sqlite3.Row | None:
    """Run a statement to completion and return its first row, if any."""
    rows = await fetch_all(conn, sql, params)
    return rows[0] if rows else None


async def execute(conn: aiosqlite.Connection, sql: str, params: Params = ()) -> int:
    """Run a statement; returns the number of rows it changed."""
    cursor = await conn.execute(sql, params)
    try:
        return cursor.rowcount
    finally:
        await cursor.close()


def placeholders(values: Iterable[object]) -> str:
    """``?, ?, ?`` for an ``IN (...)`` list."""
    return ", ".join("?" for _ in values)


def _stored_as_is(value: Any) -> Any:
    return value


def _decoder(annotation: Any) -> Callable[[Any], Any]:
    """How a column becomes a field of this type: timestamps are ISO text, enums their value, flags 0/1."""
    optional = type(None) in typing.get_args(annotation)
    kinds = [kind for kind in typing.get_args(annotation) or (annotation,) if kind is not type(None)]
    kind = kinds[0] if len(kinds) == 1 else None
    decode: Callable[[Any], Any]
    if kind is datetime:
        decode = from_db
    elif isinstance(kind, type) and issubclass(kind, (Enum, bool)):
        decode = kind
    else:
        return _stored_as_is
    return (lambda value: None if value is None else decode(value)) if optional else decode


@functools.cache
def _columns(cls: type[DataclassInstance]) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((field.name, _decoder(hints[field.name])) for field in fields(cls))


def record(cls: type[D], row: sqlite3.Row, **decoded: Any) -> D:
    """A record of ``cls`` from a row: each field is the column of the same name, read back by its
    type (timestamps, enums and flags as :mod:`storage._time` and the schema store them).

    ``decoded`` gives the fields that are not a column of their own (a nested record, a set built
    from other rows); columns that ``cls`` has no field for are ignored (joined or computed ones).
    """
    stored = {name: decode(row[name]) for name, decode in _columns(cls) if name not in decoded}
    return cls(**stored, **decoded)


def violation(exc: sqlite3.IntegrityError, errors: Mapping[str, StorageError]) -> StorageError:
    """The error to raise for a broken constraint: the first of ``errors`` whose phrase is in its message.

    Re-raises ``exc`` when none matches: a constraint the caller did not foresee is a bug, not a user's
    mistake to report.
    """
    message = str(exc)
    for phrase, error in errors.items():
        if phrase in message:
            return error
    raise exc


class Repository:
    """Base of every repository: the database and its clock."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _now(self) -> str:
        return to_db(self._db.now())

    async def _one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        async with self._db.locked() as conn:
            return await fetch_one(conn, sql, params)

    async def _all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        async with self._db.locked() as conn:
            return await fetch_all(conn, sql, params)

    async def _write(self, sql: str, params: Params = ()) -> int:
        """One statement on its own (atomic by itself); returns the rows changed."""
        async with self._db.locked() as conn:
            return await execute(conn, sql, params)

    async def _get(self, decode: Decode[R], sql: str, params: Params = ()) -> R | None:
        """The statement's first row as a record; None when it returns no row."""
        row = await self._one(sql, params)
        return None if row is None else decode(row)

    async def _list(self, decode: Decode[R], sql: str, params: Params = ()) -> list[R]:
        """Every row of the statement as a record, in the order it returns them."""
        return [decode(row) for row in await self._all(sql, params)]

    async def _returning(self, decode: Decode[R], sql: str, params: Params = ()) -> R:
        """The one row a statement always returns (``INSERT ... RETURNING *``), as a record."""
        row = await self._one(sql, params)
        assert row is not None
        return decode(row)

    async def _number(self, sql: str, params: Params = ()) -> int:
        """The integer in the first column of the one row a statement returns (a count, a sum)."""
        row = await self._one(sql, params)
        assert row is not None
        return int(row[0])
