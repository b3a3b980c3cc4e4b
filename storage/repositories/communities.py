"""Communities (a Telegram group, a Discord server) and what their admins chose."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from typing import Literal

import aiosqlite

from storage.errors import NotFound
from storage.models import Community, CustomStyle, Platform, ResultsTo
from storage.repositories._base import Repository, execute, fetch_one, record

QuotaScope = Literal["user", "group"]
_QUOTA_COLUMN: dict[str, str] = {"user": "user_daily_quota", "group": "community_daily_quota"}


def style_record(row: sqlite3.Row) -> CustomStyle:
    """A community style from its row (``custom_styles.*``)."""
    return record(CustomStyle, row)


def _weight(name: str, value: float) -> float:
    if not math.isfinite(value) or not 0.0 <= value <= 2.0:
        raise ValueError(f"{name} must be between 0 and 2")
    return value


def community_record(row: sqlite3.Row, toggles: Iterable[tuple[str, int]]) -> Community:
    """A community from its row and its (style, enabled) toggles."""
    toggles = list(toggles)
    return record(
        Community,
        row,
        enabled_styles=frozenset(style for style, enabled in toggles if enabled),
        disabled_styles=frozenset(style for style, enabled in toggles if not enabled),
    )


def check_external_id(external_id: str) -> str:
    """``external_id`` if it is a valid group chat or server id (1-128 characters), else ValueError."""
    if not 1 <= len(external_id) <= 128:
        raise ValueError("external_id must be 1-128 characters")
    return external_id


async def insert_community(conn: aiosqlite.Connection, platform: Platform, external_id: str, now: str) -> None:
    """Create the community of a group chat or server with default settings, unless it exists."""
    await execute(
        conn,
        "INSERT INTO communities (platform, external_id, created_at) VALUES (?, ?, ?)"
        " ON CONFLICT (platform, external_id) DO NOTHING",
        (platform, external_id, now),
    )


class CommunitiesRepository(Repository):
    """Settings per community; style names compare case-insensitively."""

    async def _load(self, row: sqlite3.Row | None) -> Community | None:
        if row is None:
            return None
        toggles = await self._all(
            "SELECT style, enabled FROM community_style_toggles WHERE community_id = ?", (row["id"],)
        )
        return community_record(row, ((t["style"], t["enabled"]) for t in toggles))

    async def get(self, community_id: int) -> Community | None:
        return await self._load(await self._one("SELECT * FROM communities WHERE id = ?", (community_id,)))

    async def find(self, platform: Platform | str, external_id: str) -> Community | None:
        return await self._load(
            await self._one(
                "SELECT * FROM communities WHERE platform = ? AND external_id = ?",
                (Platform(platform), external_id),
            )
        )

    async def get_or_create(self, platform: Platform | str, external_id: str) -> Community:
        """The community of a group chat or server, created with default settings on first sight."""
        platform = Platform(platform)
        check_external_id(external_id)
        async with self._db.locked() as conn:
            await insert_community(conn, platform, external_id, self._now())
        community = await self.find(platform, external_id)
        assert community is not None
        return community

    async def move(self, platform: Platform | str, old_external_id: str, new_external_id: str) -> bool:
        """The group chat got a new id (a Telegram group that became a supergroup): its community, with
        its settings, styles and counts, goes with it. False when there is none under the old id, or
        one is under the new id already (it is kept)."""
        try:
            moved = await self._write(
                "UPDATE communities SET external_id = ? WHERE platform = ? AND external_id = ?",
                (check_external_id(new_external_id), Platform(platform), old_external_id),
            )
        except sqlite3.IntegrityError:
            return False  # UNIQUE (platform, external_id): the new chat has a community of its own
        return moved > 0

    async def _update(self, community_id: int, sql: str, params: tuple[object, ...]) -> None:
        if not await self._write(sql, (*params, community_id)):
            raise NotFound(f"no community {community_id}")

    async def set_style_enabled(self, community_id: int, style: str, enabled: bool) -> None:
        """Switch a style on or off here (overriding its default)."""
        try:
            await self._write(
                "INSERT INTO community_style_toggles (community_id, style, enabled) VALUES (?, ?, ?)"
                " ON CONFLICT (community_id, style) DO UPDATE"
                " SET style = excluded.style, enabled = excluded.enabled",
                (community_id, style, int(enabled)),
            )
        except sqlite3.IntegrityError as exc:
            raise NotFound(f"no community {community_id}") from exc

    async def set_quota(self, community_id: int, scope: QuotaScope, limit: int | None) -> None:
        """Daily /generate quota: ``"user"`` per member, ``"group"`` for the whole community.

        ``None`` clears it (the global default for "user", unlimited for "group").
        """
        column = _QUOTA_COLUMN.get(scope)
        if column is None:
            raise ValueError('scope must be "user" or "group"')
        if limit is not None and limit < 0:
            raise ValueError("a quota cannot be negative")
        await self._update(community_id, f"UPDATE communities SET {column} = ? WHERE id = ?", (limit,))

    async def set_results_to(self, community_id: int, results_to: ResultsTo) -> None:
        """Where /generate results go: the channel, or the member's direct messages."""
        await self._update(community_id, "UPDATE communities SET results_to = ? WHERE id = ?", (ResultsTo(results_to),))

    async def set_nsfw_allowed(self, community_id: int, allowed: bool) -> None:
        await self._update(community_id, "UPDATE communities SET nsfw_allowed = ? WHERE id = ?", (int(allowed),))

    async def add_custom_style(
        self,
        community_id: int,
        name: str,
        prompt: str,
        negative_prompt: str = "",
        lora_key: str | None = None,
        style_weight: float = 0.3,
        face_weight: float = 0.9,
        created_by: int | None = None,
    ) -> CustomStyle | None:
        """Add a community style, replacing one of the same name (case-insensitive).

        Returns the style it replaced (None for a new name), so that the caller can delete the
        replaced style's LoRA blob; read the new one back with :meth:`custom_style`.
        """
        if not 1 <= len(name) <= 64:
            raise ValueError("a style name is 1-64 characters")
        _weight("style_weight", style_weight)
        _weight("face_weight", face_weight)
        async with self._db.transaction() as conn:
            if await fetch_one(conn, "SELECT 1 FROM communities WHERE id = ?", (community_id,)) is None:
                raise NotFound(f"no community {community_id}")
            previous = await fetch_one(
                conn, "SELECT * FROM custom_styles WHERE community_id = ? AND name = ?", (community_id, name)
            )
            try:
                await execute(
                    conn,
                    "INSERT INTO custom_styles (community_id, name, prompt, negative_prompt, lora_key,"
                    " style_weight, face_weight, created_by, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (community_id, name) DO UPDATE SET name = excluded.name,"
                    " prompt = excluded.prompt, negative_prompt = excluded.negative_prompt,"
                    " lora_key = excluded.lora_key, style_weight = excluded.style_weight,"
                    " face_weight = excluded.face_weight, created_by = excluded.created_by,"
                    " created_at = excluded.created_at",
                    (
                        community_id,
                        name,
                        prompt,
                        negative_prompt,
                        lora_key,
                        style_weight,
                        face_weight,
                        created_by,
                        self._now(),
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise NotFound(f"no user {created_by}") from exc
        return None if previous is None else style_record(previous)

    async def custom_style(self, community_id: int, name: str) -> CustomStyle | None:
        """The community's style of this name (case-insensitive), if any."""
        return await self._get(
            style_record, "SELECT * FROM custom_styles WHERE community_id = ? AND name = ?", (community_id, name)
        )

    async def remove_custom_style(self, community_id: int, name: str) -> CustomStyle | None:
        """Remove a community style; returns it (its ``lora_key`` blob is the caller's to delete)."""
        return await self._get(
            style_record,
            "DELETE FROM custom_styles WHERE community_id = ? AND name = ? RETURNING *",
            (community_id, name),
        )

    async def style_file_used(self, lora_key: str) -> bool:
        """Whether any community's style still uses the uploaded file ``lora_key``."""
        return bool(await self._number("SELECT EXISTS (SELECT 1 FROM custom_styles WHERE lora_key = ?)", (lora_key,)))

    async def custom_styles(self, community_id: int) -> list[CustomStyle]:
        """The community's own styles, by name."""
        return await self._list(
            style_record, "SELECT * FROM custom_styles WHERE community_id = ? ORDER BY name", (community_id,)
        )
