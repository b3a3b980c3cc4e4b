"""Snapshots: everything the conversation service reads about a user, or a community, in one statement.

Each statement is one round trip to aiosqlite's thread instead of the ~10 that reading the same through
the other repositories takes; under load those round trips, not the SQL, were the bot's bottleneck
(docs/benchmarks.md). Lists come back as extra joined rows (active runs, custom styles), or as JSON
arrays of exact values (photo keys, style toggles), and are put in order here.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from typing import Any

from storage.models import (
    CommunitySnapshot,
    ModelStatus,
    PhotoSetStatus,
    Platform,
    RunStatus,
    UserSnapshot,
)
from storage.repositories._base import Repository, fetch_all
from storage.repositories.communities import check_external_id, community_record, insert_community, style_record
from storage.repositories.runs import run_record
from storage.repositories.usage import GENERATE

_USER_SQL = """
WITH
    latest AS (SELECT status, photo_set_id FROM face_models WHERE user_id = :user ORDER BY version DESC LIMIT 1),
    collecting AS (SELECT id FROM photo_sets WHERE user_id = :user AND status = :collecting),
    facts AS (
        SELECT
            (SELECT state FROM conversations WHERE user_id = :user) AS conversation_state,
            (SELECT status FROM latest) AS model_status,
            EXISTS (SELECT 1 FROM face_models WHERE user_id = :user AND status = :ready) AS has_ready_model,
            (SELECT count(*) FROM photos WHERE set_id = (SELECT id FROM collecting)) AS photo_count,
            (SELECT json_group_array(json_array(id, blob_key)) FROM photos
                WHERE set_id = coalesce((SELECT id FROM collecting), (SELECT photo_set_id FROM latest))) AS photo_keys,
            (SELECT coalesce(sum(n), 0) FROM usage_counters
                WHERE user_id = :user AND community_id IS :community AND day = :day AND kind = :kind)
                AS generations_today,
            (SELECT coalesce(sum(n), 0) FROM usage_counters WHERE user_id = :user AND day = :day AND kind = :kind)
                AS generations_everywhere
    )
SELECT facts.*, runs.* FROM facts
LEFT JOIN runs ON runs.user_id = :user AND runs.status IN (:queued, :running)
ORDER BY runs.created_at, runs.rowid
"""

_COMMUNITY_SQL = """
SELECT
    c.id, c.platform, c.external_id, c.user_daily_quota, c.community_daily_quota, c.results_to, c.nsfw_allowed,
    (SELECT json_group_array(json_array(style, enabled)) FROM community_style_toggles WHERE community_id = c.id)
        AS toggles,
    (SELECT coalesce(sum(n), 0) FROM usage_counters WHERE community_id = c.id AND day = :day AND kind = :kind)
        AS generations_today,
    (SELECT count(*) FROM runs WHERE community_id = c.id AND kind = :kind AND status IN (:queued, :running))
        AS active_generations,
    s.community_id, s.name, s.prompt, s.negative_prompt, s.lora_key, s.style_weight, s.face_weight, s.created_by,
    s.created_at
FROM communities c
LEFT JOIN custom_styles s ON s.community_id = c.id
WHERE c.platform = :platform AND c.external_id = :external_id
ORDER BY s.name
"""


class SnapshotsRepository(Repository):
    """Read-only views across tables (the community snapshot creates the community on first sight)."""

    async def user(self, user_id: int, day: date, community_id: int | None = None) -> UserSnapshot:
        """The user's conversation state, models, photos, active runs and ``day``'s /generate count
        in ``community_id`` (None: private chats), as one consistent read."""
        rows = await self._all(
            _USER_SQL,
            {
                "user": user_id,
                "community": community_id,
                "day": day.isoformat(),
                "kind": GENERATE,
                "collecting": PhotoSetStatus.COLLECTING,
                "ready": ModelStatus.READY,
                "queued": RunStatus.QUEUED,
                "running": RunStatus.RUNNING,
            },
        )
        first = rows[0]
        state: dict[str, Any] | None = None
        if first["conversation_state"] is not None:
            state = json.loads(first["conversation_state"])
            assert isinstance(state, dict)
        keys = sorted(json.loads(first["photo_keys"]))
        status = first["model_status"]
        return UserSnapshot(
            state=state,
            model_status=None if status is None else ModelStatus(status),
            has_ready_model=bool(first["has_ready_model"]),
            photo_count=int(first["photo_count"]),
            photo_keys=tuple(key for _, key in keys),
            active_runs=tuple(run_record(row) for row in rows if row["id"] is not None),
            generations_today=int(first["generations_today"]),
            generations_everywhere=int(first["generations_everywhere"]),
        )

    async def community(self, platform: Platform | str, external_id: str, day: date) -> CommunitySnapshot:
        """The community of a group chat or server (created with default settings on first sight),
        its own styles by name, everyone's /generate count there on ``day`` and the runs in flight."""
        platform = Platform(platform)
        params = {"platform": platform, "external_id": check_external_id(external_id),
                  "day": day.isoformat(), "kind": GENERATE, "queued": RunStatus.QUEUED,
                  "running": RunStatus.RUNNING}  # fmt: skip
        async with self._db.locked() as conn:
            rows = await fetch_all(conn, _COMMUNITY_SQL, params)
            if not rows:
                await insert_community(conn, platform, external_id, self._now())
                rows = await fetch_all(conn, _COMMUNITY_SQL, params)
        return _community_snapshot(rows)


def _community_snapshot(rows: list[sqlite3.Row]) -> CommunitySnapshot:
    first = rows[0]
    toggles = [(style, enabled) for style, enabled in json.loads(first["toggles"])]
    return CommunitySnapshot(
        community=community_record(first, toggles),
        custom_styles=tuple(style_record(row) for row in rows if row["name"] is not None),
        generations_today=int(first["generations_today"]),
        active_generations=int(first["active_generations"]),
    )
