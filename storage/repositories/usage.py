"""Daily usage counters behind the /generate quotas."""

from __future__ import annotations

import sqlite3
from datetime import date

from storage.errors import NotFound
from storage.repositories._base import Repository, fetch_one

GENERATE = "generate"


class UsageRepository(Repository):
    """Counts per user, per community (``None`` = private chats), per day, per kind.

    ``day`` is whatever calendar day the caller's quota uses (the service passes the UTC date).
    Forgetting a user removes their counters, so they stop counting toward a community's total.
    """

    async def increment(
        self, user_id: int, community_id: int | None, day: date, kind: str = GENERATE, n: int = 1
    ) -> int:
        """Add ``n`` (negative to refund; the count never drops below 0); returns the new count."""
        try:
            async with self._db.locked() as conn:
                row = await fetch_one(
                    conn,
                    "INSERT INTO usage_counters (user_id, community_id, day, kind, n)"
                    " VALUES (?, ?, ?, ?, max(?, 0))"
                    " ON CONFLICT (user_id, ifnull(community_id, 0), day, kind)"
                    " DO UPDATE SET n = max(n + ?, 0) RETURNING n",
                    (user_id, community_id, day.isoformat(), kind, n, n),
                )
        except sqlite3.IntegrityError as exc:
            raise NotFound(f"no user {user_id} or community {community_id}") from exc
        assert row is not None
        return int(row["n"])

    async def count_user(self, user_id: int, day: date, community_id: int | None = None, kind: str = GENERATE) -> int:
        """The user's count that day in this community, or in private chats when ``community_id`` is None."""
        row = await self._one(
            "SELECT coalesce(sum(n), 0) AS n FROM usage_counters"
            " WHERE user_id = ? AND community_id IS ? AND day = ? AND kind = ?",
            (user_id, community_id, day.isoformat(), kind),
        )
        assert row is not None
        return int(row["n"])

    async def count_user_everywhere(self, user_id: int, day: date, kind: str = GENERATE) -> int:
        """The user's count that day across every community and private chat."""
        row = await self._one(
            "SELECT coalesce(sum(n), 0) AS n FROM usage_counters WHERE user_id = ? AND day = ? AND kind = ?",
            (user_id, day.isoformat(), kind),
        )
        assert row is not None
        return int(row["n"])

    async def count_community(self, community_id: int, day: date, kind: str = GENERATE) -> int:
        """Everyone's count that day in this community."""
        row = await self._one(
            "SELECT coalesce(sum(n), 0) AS n FROM usage_counters WHERE community_id = ? AND day = ? AND kind = ?",
            (community_id, day.isoformat(), kind),
        )
        assert row is not None
        return int(row["n"])
