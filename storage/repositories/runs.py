"""Runs: one training or generation request, from queued to its single terminal state."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from datetime import datetime

from storage._time import to_db
from storage.errors import Conflict, NotFound
from storage.models import Delivery, Platform, Run, RunKind, RunStatus
from storage.repositories._base import Repository, placeholders, record, violation

_ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)
_TERMINAL = (RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED)
_IN_ACTIVE = f"status IN ({placeholders(_ACTIVE)})"


def run_record(row: sqlite3.Row) -> Run:
    """A run from its row (``runs.*``; other columns of a joined row are ignored)."""
    return record(Run, row, delivery=record(Delivery, row))


class RunsRepository(Repository):
    """A run ends exactly once: :meth:`finish` on an ended run changes nothing and returns False."""

    async def create(
        self,
        run_id: str,
        user_id: int,
        kind: RunKind,
        delivery: Delivery,
        model_id: int | None = None,
        style: str | None = None,
        count: int | None = None,
        request: str | None = None,
    ) -> Run:
        """A queued run, attempt 1. Raises :class:`Conflict` for a run id already used.

        ``request`` is the job payload as JSON, kept so that a later attempt can submit it again.
        """
        kind = RunKind(kind)
        if count is not None and count < 1:
            raise ValueError("count must be at least 1")
        try:
            return await self._returning(
                run_record,
                "INSERT INTO runs (id, user_id, kind, status, model_id, style, count, platform, chat_id,"
                " progress_message_id, community_id, asked_in_chat_id, created_at, request)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
                (
                    run_id,
                    user_id,
                    kind,
                    RunStatus.QUEUED,
                    model_id,
                    style,
                    count,
                    Platform(delivery.platform),
                    delivery.chat_id,
                    delivery.progress_message_id,
                    delivery.community_id,
                    delivery.asked_in_chat_id,
                    self._now(),
                    request,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise violation(
                exc,
                {
                    "UNIQUE": Conflict(f"run id {run_id!r} is already used"),
                    "another user": Conflict(f"face model {model_id} belongs to another user"),
                    "FOREIGN KEY": NotFound(f"no user {user_id}, model {model_id} or community"),
                },
            ) from exc

    async def get(self, run_id: str) -> Run | None:
        """The run with this id, whatever its status."""
        return await self._get(run_record, "SELECT * FROM runs WHERE id = ?", (run_id,))

    async def get_many(self, run_ids: Sequence[str]) -> list[Run]:
        """The runs with these ids that exist, in no particular order (one statement)."""
        if not run_ids:
            return []
        return await self._list(run_record, f"SELECT * FROM runs WHERE id IN ({placeholders(run_ids)})", tuple(run_ids))

    async def move_chat(self, platform: Platform | str, old_chat_id: str, new_chat_id: str) -> int:
        """Active runs whose results go to (or were asked in) ``old_chat_id`` go to ``new_chat_id`` (a
        group with a new id); returns how many runs changed."""
        old, new = old_chat_id, new_chat_id
        return await self._write(
            "UPDATE runs SET chat_id = CASE WHEN chat_id = ? THEN ? ELSE chat_id END,"
            " asked_in_chat_id = CASE WHEN asked_in_chat_id = ? THEN ? ELSE asked_in_chat_id END"
            f" WHERE platform = ? AND (chat_id = ? OR asked_in_chat_id = ?) AND {_IN_ACTIVE}",
            (old, new, old, new, Platform(platform), old, old, *_ACTIVE),
        )

    async def set_progress_message(self, run_id: str, message_id: str) -> None:
        """Remember the chat message that shows this run's progress (edited as it advances)."""
        if not await self._write("UPDATE runs SET progress_message_id = ? WHERE id = ?", (message_id, run_id)):
            raise NotFound(f"no run {run_id!r}")

    async def mark_running(self, run_id: str) -> bool:
        """queued → running; False when the run is not queued."""
        return bool(
            await self._write(
                "UPDATE runs SET status = ?, started_at = coalesce(started_at, ?) WHERE id = ? AND status = ?",
                (RunStatus.RUNNING, self._now(), run_id, RunStatus.QUEUED),
            )
        )

    async def update_progress(self, run_id: str, stage: str | None, progress: float) -> bool:
        """Record progress (clamped to 0-1) of an active run; a queued run becomes running.

        False when the run already ended: late progress notes are dropped.
        """
        if math.isnan(progress):
            raise ValueError("progress is NaN")
        progress = min(1.0, max(0.0, progress))
        return bool(
            await self._write(
                "UPDATE runs SET stage = ?, progress = ?, status = ?, started_at = coalesce(started_at, ?)"
                f" WHERE id = ? AND {_IN_ACTIVE}",
                (stage, progress, RunStatus.RUNNING, self._now(), run_id, *_ACTIVE),
            )
        )

    async def finish(
        self,
        run_id: str,
        status: RunStatus,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> bool:
        """End an active run as done, failed or cancelled.

        Returns True when this call ended it, False (changing nothing) when it had already ended:
        only the caller that gets True delivers the result, so a repeated outcome is harmless.
        """
        status = RunStatus(status)
        if status not in _TERMINAL:
            raise ValueError(f"{status} is not a terminal status")
        return bool(
            await self._write(
                "UPDATE runs SET status = ?, error_code = ?, error_message = ?, finished_at = ?,"
                " progress = CASE WHEN ? THEN 1.0 ELSE progress END"
                f" WHERE id = ? AND {_IN_ACTIVE}",
                (
                    status,
                    error_code,
                    error_message,
                    self._now(),
                    status is RunStatus.DONE,
                    run_id,
                    *_ACTIVE,
                ),
            )
        )

    async def mark_delivered(self, run_id: str) -> bool:
        """Record that an ended run's result reached the user; False if it was already recorded."""
        return bool(
            await self._write(
                f"UPDATE runs SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL AND NOT {_IN_ACTIVE}",
                (self._now(), run_id, *_ACTIVE),
            )
        )

    async def restart(self, run_id: str, attempt: int) -> int | None:
        """Start the next attempt of an active run whose attempt ``attempt`` was lost; return its number.

        The run goes back to queued with its progress cleared. None, changing nothing, when the run has
        ended or another attempt is already under way: of two callers racing, one restarts it.
        """
        row = await self._one(
            "UPDATE runs SET attempt = attempt + 1, status = ?, progress = 0, stage = NULL, started_at = NULL"
            f" WHERE id = ? AND attempt = ? AND {_IN_ACTIVE} RETURNING attempt",
            (RunStatus.QUEUED, run_id, attempt, *_ACTIVE),
        )
        return None if row is None else int(row["attempt"])

    async def active(self, user_id: int) -> list[Run]:
        """The user's queued and running runs, oldest first."""
        return await self._list(
            run_record,
            f"SELECT * FROM runs WHERE user_id = ? AND {_IN_ACTIVE} ORDER BY created_at, rowid",
            (user_id, *_ACTIVE),
        )

    async def active_using(self, blob_key: str) -> bool:
        """Whether a queued or running run's request names ``blob_key`` (a style file it will load)."""
        sql = f"SELECT EXISTS (SELECT 1 FROM runs WHERE {_IN_ACTIVE} AND instr(request, ?) > 0)"
        return bool(await self._number(sql, (*_ACTIVE, json.dumps(blob_key))))

    async def active_all(self) -> list[Run]:
        """Every queued and running run, oldest first (to resume watching them after a restart)."""
        return await self._list(
            run_record, f"SELECT * FROM runs WHERE {_IN_ACTIVE} ORDER BY created_at, rowid", _ACTIVE
        )

    async def count_active(self) -> dict[tuple[RunKind, RunStatus], int]:
        """How many runs are queued and running, by kind and status (absent pairs: none)."""
        rows = await self._all(
            f"SELECT kind, status, count(*) AS n FROM runs WHERE {_IN_ACTIVE} GROUP BY kind, status", _ACTIVE
        )
        return {(RunKind(row["kind"]), RunStatus(row["status"])): int(row["n"]) for row in rows}

    async def cancelled_since(self, since: datetime) -> list[Run]:
        """Runs cancelled at ``since`` or later, oldest first (their jobs may still wait in Redis)."""
        return await self._list(
            run_record,
            "SELECT * FROM runs WHERE status = ? AND finished_at >= ? ORDER BY created_at, rowid",
            (RunStatus.CANCELLED, to_db(since)),
        )

    async def by_status(self, status: RunStatus) -> list[Run]:
        """Every run in ``status``, oldest first."""
        return await self._list(
            run_record, "SELECT * FROM runs WHERE status = ? ORDER BY created_at, rowid", (RunStatus(status),)
        )

    async def queue_position(self, run_id: str) -> int | None:
        """1 for the next queued run of its kind, 2 for the one after...; None unless queued."""
        row = await self._one(
            "SELECT count(o.id) AS ahead, r.status AS status FROM runs r"
            " LEFT JOIN runs o ON o.kind = r.kind AND o.status = ?"
            " AND (o.created_at < r.created_at OR (o.created_at = r.created_at AND o.rowid < r.rowid))"
            " WHERE r.id = ? GROUP BY r.id",
            (RunStatus.QUEUED, run_id),
        )
        if row is None or row["status"] != RunStatus.QUEUED:
            return None
        return int(row["ahead"]) + 1
