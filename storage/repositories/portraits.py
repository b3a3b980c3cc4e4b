"""Portraits delivered by generation runs."""

from __future__ import annotations

import sqlite3

from storage.errors import Conflict, NotFound
from storage.models import Portrait
from storage.repositories._base import Repository, fetch_one, record

_INT64 = range(-(2**63), 2**63)


def _portrait(row: sqlite3.Row) -> Portrait:
    return record(Portrait, row)


class PortraitsRepository(Repository):
    """Recording the same portrait twice (a re-delivered outcome) returns the first record."""

    async def add(
        self, run_id: str, user_id: int, blob_key: str, seed: int, score: float | None, style: str
    ) -> Portrait:
        """Record one portrait of a run. Raises :class:`Conflict` when the key belongs to another run."""
        if seed not in _INT64:
            raise ValueError("seed does not fit a signed 64-bit integer")
        async with self._db.transaction() as conn:
            try:
                row = await fetch_one(
                    conn,
                    "INSERT INTO portraits (run_id, user_id, blob_key, seed, score, style, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (blob_key) DO NOTHING RETURNING *",
                    (run_id, user_id, blob_key, seed, score, style, self._now()),
                )
            except sqlite3.IntegrityError as exc:
                raise NotFound(f"no run {run_id!r} of user {user_id}") from exc
            if row is None:
                row = await fetch_one(conn, "SELECT * FROM portraits WHERE blob_key = ?", (blob_key,))
                assert row is not None
                if row["run_id"] != run_id or row["user_id"] != user_id:
                    raise Conflict(f"blob key {blob_key!r} is already a portrait of run {row['run_id']!r}")
        return _portrait(row)

    async def get(self, portrait_id: int) -> Portrait | None:
        """The portrait with this id."""
        return await self._get(_portrait, "SELECT * FROM portraits WHERE id = ?", (portrait_id,))

    async def for_run(self, run_id: str) -> list[Portrait]:
        """A run's portraits in the order recorded (the worker's ranking)."""
        return await self._list(_portrait, "SELECT * FROM portraits WHERE run_id = ? ORDER BY id", (run_id,))

    async def for_user(self, user_id: int) -> list[Portrait]:
        """All of a user's portraits, newest first."""
        return await self._list(
            _portrait, "SELECT * FROM portraits WHERE user_id = ? ORDER BY created_at DESC, id DESC", (user_id,)
        )
