"""Runs: one training or generation request, from queued to its single terminal state."""

from __future__ import annotations

import math
import sqlite3

from storage._time import from_db, opt_from_db
from storage.errors import Conflict, NotFound
from storage.models import Delivery, Platform, Run, RunKind, RunStatus
from storage.repositories._base import Repository, fetch_one, placeholders

_ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)
_TERMINAL = (RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED)
_IN_ACTIVE = f"status IN ({placeholders(_ACTIVE)})"


def run_record(row: sqlite3.Row) -> Run:
    return Run(
        id=row["id"],
        user_id=row["user_id"],
        kind=RunKind(row["kind"]),
        status=RunStatus(row["status"]),
        attempt=row["attempt"],
        model_id=row["model_id"],
        style=row["style"],
        count=row["count"],
        progress=row["progress"],
        stage=row["stage"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        delivery=Delivery(
            platform=Platform(row["platform"]),
            chat_id=row["chat_id"],
            progress_message_id=row["progress_message_id"],
            community_id=row["community_id"],
        ),
        created_at=from_db(row["created_at"]),
        started_at=opt_from_db(row["started_at"]),
        finished_at=opt_from_db(row["finished_at"]),
        delivered_at=opt_from_db(row["delivered_at"]),
    )


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
    ) -> Run:
        """A queued run, attempt 1. Raises :class:`Conflict` for a run id already used."""
        kind = RunKind(kind)
        if count is not None and count < 1:
            raise ValueError("count must be at least 1")
        try:
            row = await self._one(
                "INSERT INTO runs (id, user_id, kind, status, model_id, style, count, platform, chat_id,"
                " progress_message_id, community_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
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
                    self._now(),
                ),
            )
        except sqlite3.IntegrityError as exc:
            message = str(exc)
            if "UNIQUE" in message:
                raise Conflict(f"run id {run_id!r} is already used") from exc
            if "another user" in message:
                raise Conflict(f"face model {model_id} belongs to another user") from exc
            if "FOREIGN KEY" in message:
                raise NotFound(f"no user {user_id}, model {model_id} or community") from exc
            raise
        assert row is not None
        return run_record(row)

    async def get(self, run_id: str) -> Run | None:
        row = await self._one("SELECT * FROM runs WHERE id = ?", (run_id,))
        return None if row is None else run_record(row)

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

    async def next_attempt(self, run_id: str) -> int:
        """Start another attempt of a run (after a worker crash or a failure) and return its number.

        The run goes back to queued with its progress and error cleared. A run that is done or was
        cancelled is never re-run: :class:`Conflict`.
        """
        async with self._db.transaction() as conn:
            row = await fetch_one(conn, "SELECT status FROM runs WHERE id = ?", (run_id,))
            if row is None:
                raise NotFound(f"no run {run_id!r}")
            if row["status"] in (RunStatus.DONE, RunStatus.CANCELLED):
                raise Conflict(f"run {run_id!r} is {row['status']}: it is not retried")
            updated = await fetch_one(
                conn,
                "UPDATE runs SET attempt = attempt + 1, status = ?, progress = 0, stage = NULL,"
                " error_code = NULL, error_message = NULL, started_at = NULL, finished_at = NULL"
                " WHERE id = ? RETURNING attempt",
                (RunStatus.QUEUED, run_id),
            )
            assert updated is not None
            return int(updated["attempt"])

    async def active(self, user_id: int) -> list[Run]:
        """The user's queued and running runs, oldest first."""
        rows = await self._all(
            f"SELECT * FROM runs WHERE user_id = ? AND {_IN_ACTIVE} ORDER BY created_at, rowid",
            (user_id, *_ACTIVE),
        )
        return [run_record(row) for row in rows]

    async def active_all(self) -> list[Run]:
        """Every queued and running run, oldest first (to resume watching them after a restart)."""
        rows = await self._all(f"SELECT * FROM runs WHERE {_IN_ACTIVE} ORDER BY created_at, rowid", _ACTIVE)
        return [run_record(row) for row in rows]

    async def by_status(self, status: RunStatus) -> list[Run]:
        """Every run in ``status``, oldest first."""
        rows = await self._all("SELECT * FROM runs WHERE status = ? ORDER BY created_at, rowid", (RunStatus(status),))
        return [run_record(row) for row in rows]

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
