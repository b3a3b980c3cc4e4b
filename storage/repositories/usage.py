"""Daily usage counters behind the /generate quotas."""

from __future__ import annotations

import sqlite3
from datetime import date

from storage.errors import NotFound
from storage.repositories._base import Repository

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
            return await self._number(
                "INSERT INTO usage_counters (user_id, community_id, day, kind, n)"
                " VALUES (?, ?, ?, ?, max(?, 0))"
                " ON CONFLICT (user_id, ifnull(community_id, 0), day, kind)"
                " DO UPDATE SET n = max(n + ?, 0) RETURNING n",
                (user_id, community_id, day.isoformat(), kind, n, n),
            )
        except sqlite3.IntegrityError as exc:
            raise NotFound(f"no user {user_id} or community {community_id}") from exc

    async def count_user(self, user_id: int, day: date, community_id: int | None = None, kind: str = GENERATE) -> int:
        """The user's count that day in this community, or in private chats when ``community_id`` is None."""
        return await self._total("user_id = ? AND community_id IS ?", (user_id, community_id), day, kind)

    async def count_user_everywhere(self, user_id: int, day: date, kind: str = GENERATE) -> int:
        """The user's count that day across every community and private chat."""
        return await self._total("user_id = ?", (user_id,), day, kind)

    async def count_community(self, community_id: int, day: date, kind: str = GENERATE) -> int:
        """Everyone's count that day in this community."""
        return await self._total("community_id = ?", (community_id,), day, kind)

    async def _total(self, where: str, params: tuple[object, ...], day: date, kind: str) -> int:
        """The sum of the counters matching ``where`` on ``day`` for ``kind`` (0 when there are none)."""
        return await self._number(
            f"SELECT coalesce(sum(n), 0) FROM usage_counters WHERE {where} AND day = ? AND kind = ?",
            (*params, day.isoformat(), kind),
        )
