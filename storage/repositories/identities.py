"""Users and the chat accounts (identities) they speak through."""

from __future__ import annotations

import sqlite3

from storage.models import Identity, Platform, User
from storage.repositories._base import Repository, execute, fetch_one, record

#: The user behind a chat account, and the name stored for that account.
_BY_ACCOUNT = (
    "SELECT u.*, i.display_name AS display_name FROM users u JOIN identities i ON i.user_id = u.id"
    " WHERE i.platform = ? AND i.platform_user_id = ?"
)


def _user(row: sqlite3.Row) -> User:
    return record(User, row)


def _identity(row: sqlite3.Row) -> Identity:
    return record(Identity, row)


def _check_account(platform: Platform | str, platform_user_id: str) -> tuple[Platform, str]:
    if not 1 <= len(platform_user_id) <= 128:
        raise ValueError("platform_user_id must be 1-128 characters")
    return Platform(platform), platform_user_id


class UsersRepository(Repository):
    """One user per person; each chat account (identity) belongs to exactly one user."""

    async def get(self, user_id: int) -> User | None:
        """The user with this id."""
        return await self._get(_user, "SELECT * FROM users WHERE id = ?", (user_id,))

    async def find(self, platform: Platform | str, platform_user_id: str) -> User | None:
        """The user behind a chat account, if it has spoken to the bot before."""
        platform, platform_user_id = _check_account(platform, platform_user_id)
        return await self._get(_user, _BY_ACCOUNT, (platform, platform_user_id))

    async def get_or_create(self, platform: Platform | str, platform_user_id: str, display_name: str = "") -> User:
        """The user behind a chat account, created on first contact.

        A non-empty ``display_name`` refreshes the one stored for this account.
        """
        platform, platform_user_id = _check_account(platform, platform_user_id)
        # Nearly always the account is known and its name unchanged: one read, no transaction.
        known = await self._one(_BY_ACCOUNT, (platform, platform_user_id))
        if known is not None and (not display_name or known["display_name"] == display_name):
            return _user(known)
        now = self._now()
        async with self._db.transaction() as conn:
            row = await fetch_one(conn, _BY_ACCOUNT, (platform, platform_user_id))
            if row is not None:
                if display_name:
                    await execute(
                        conn,
                        "UPDATE identities SET display_name = ?"
                        " WHERE platform = ? AND platform_user_id = ? AND display_name != ?",
                        (display_name, platform, platform_user_id, display_name),
                    )
                return _user(row)
            user = await fetch_one(conn, "INSERT INTO users (created_at) VALUES (?) RETURNING *", (now,))
            assert user is not None
            await execute(
                conn,
                "INSERT INTO identities (platform, platform_user_id, user_id, display_name, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (platform, platform_user_id, user["id"], display_name, now),
            )
            return _user(user)

    async def identities(self, user_id: int) -> list[Identity]:
        """The chat accounts of a user, oldest first."""
        return await self._list(
            _identity,
            "SELECT * FROM identities WHERE user_id = ? ORDER BY created_at, platform, platform_user_id",
            (user_id,),
        )
