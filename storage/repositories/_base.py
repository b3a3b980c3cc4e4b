"""Shared plumbing of the repositories: statement helpers and the base class."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import aiosqlite

from storage._time import to_db
from storage.db import Database

Params = Sequence[Any] | Mapping[str, Any]


async def fetch_all(conn: aiosqlite.Connection, sql: str, params: Params = ()) -> list[sqlite3.Row]:
    """Run a statement to completion and return its rows (also for ``... RETURNING``)."""
    return list(await conn.execute_fetchall(sql, params))


async def fetch_one(conn: aiosqlite.Connection, sql: str, params: Params = ()) -> sqlite3.Row | None:
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
