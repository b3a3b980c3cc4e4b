"""The persisted conversation state of each user (a JSON object owned by bot/core)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from storage.errors import NotFound
from storage.repositories._base import Repository


class ConversationsRepository(Repository):
    """One JSON object per user; the core decides what is in it."""

    async def get_state(self, user_id: int) -> dict[str, Any] | None:
        """The stored state, or None when the user has none yet."""
        row = await self._one("SELECT state FROM conversations WHERE user_id = ?", (user_id,))
        if row is None:
            return None
        state = json.loads(row["state"])
        assert isinstance(state, dict)
        return state

    async def set_state(self, user_id: int, state: dict[str, Any]) -> None:
        """Replace the user's state (TypeError/ValueError for values JSON cannot hold)."""
        if not isinstance(state, dict):
            raise TypeError("conversation state must be a dict")
        text = json.dumps(state, sort_keys=True, separators=(",", ":"), allow_nan=False)
        try:
            await self._write(
                "INSERT INTO conversations (user_id, state, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id) DO UPDATE"
                " SET state = excluded.state, updated_at = excluded.updated_at",
                (user_id, text, self._now()),
            )
        except sqlite3.IntegrityError as exc:
            raise NotFound(f"no user {user_id}") from exc

    async def clear_state(self, user_id: int) -> None:
        await self._write("DELETE FROM conversations WHERE user_id = ?", (user_id,))
