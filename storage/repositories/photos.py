"""Photo sets (the selfies a user sends for one training run) and their photos."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable

from storage.errors import Conflict, NotFound, PhotoSetClosed
from storage.models import Photo, PhotoSet, PhotoSetStatus
from storage.repositories._base import Repository, execute, fetch_all, fetch_one, placeholders, record, violation

_SHA256 = re.compile(r"[0-9a-f]{64}")
_COLLECTING_SET = "SELECT * FROM photo_sets WHERE user_id = ? AND status = ?"


def _set(row: sqlite3.Row) -> PhotoSet:
    return record(PhotoSet, row)


def _photo(row: sqlite3.Row) -> Photo:
    return record(Photo, row)


class PhotosRepository(Repository):
    """A user has at most one set collecting photos at a time; duplicates within a set are refused."""

    async def open_set(self, user_id: int) -> PhotoSet:
        """The user's collecting set, created if there is none."""
        async with self._db.transaction() as conn:
            row = await fetch_one(conn, _COLLECTING_SET, (user_id, PhotoSetStatus.COLLECTING))
            if row is None:
                try:
                    row = await fetch_one(
                        conn,
                        "INSERT INTO photo_sets (user_id, status, created_at) VALUES (?, ?, ?) RETURNING *",
                        (user_id, PhotoSetStatus.COLLECTING, self._now()),
                    )
                except sqlite3.IntegrityError as exc:
                    raise NotFound(f"no user {user_id}") from exc
            assert row is not None
            return _set(row)

    async def open_set_with_count(self, user_id: int) -> tuple[PhotoSet, int]:
        """:meth:`open_set` and the number of photos in it, in one read when the set exists."""
        row = await self._one(
            "SELECT s.*, (SELECT count(*) FROM photos WHERE set_id = s.id) AS photo_count"
            " FROM photo_sets s WHERE s.user_id = ? AND s.status = ?",
            (user_id, PhotoSetStatus.COLLECTING),
        )
        if row is not None:
            return _set(row), int(row["photo_count"])
        photo_set = await self.open_set(user_id)
        return photo_set, await self.count(photo_set.id)

    async def current_set(self, user_id: int) -> PhotoSet | None:
        """The user's collecting set, if any."""
        return await self._get(_set, _COLLECTING_SET, (user_id, PhotoSetStatus.COLLECTING))

    async def get_set(self, set_id: int) -> PhotoSet | None:
        """The set with this id, whatever its status."""
        return await self._get(_set, "SELECT * FROM photo_sets WHERE id = ?", (set_id,))

    async def add_photo(
        self,
        set_id: int,
        user_id: int,
        blob_key: str,
        sha256: str,
        size_bytes: int,
        width: int,
        height: int,
        mime: str,
    ) -> Photo | None:
        """Record a stored photo in a collecting set; None when the same file is already in it.

        ``sha256`` is the hex digest of the upload. Raises :class:`PhotoSetClosed` when the set is
        not collecting (or does not exist) and :class:`Conflict` when the set is another user's or
        the blob key is already recorded.
        """
        sha256 = sha256.lower()
        if not _SHA256.fullmatch(sha256):
            raise ValueError("sha256 must be 64 hex digits")
        try:
            return await self._get(
                _photo,
                "INSERT INTO photos (set_id, user_id, blob_key, sha256, size_bytes, width, height,"
                " mime, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (set_id, sha256) DO NOTHING RETURNING *",
                (set_id, user_id, blob_key, sha256, size_bytes, width, height, mime, self._now()),
            )
        except sqlite3.IntegrityError as exc:
            raise violation(
                exc,
                {
                    "not collecting": PhotoSetClosed(f"photo set {set_id} is not collecting photos"),
                    "blob_key": Conflict(f"blob key {blob_key!r} is already recorded"),
                    "FOREIGN KEY": Conflict(f"photo set {set_id} does not belong to user {user_id}"),
                },
            ) from exc

    async def contains(self, set_id: int, sha256: str) -> bool:
        """Whether the set already holds an upload with this SHA-256 (check before storing a blob)."""
        row = await self._one("SELECT 1 FROM photos WHERE set_id = ? AND sha256 = ?", (set_id, sha256.lower()))
        return row is not None

    async def photos(self, set_id: int) -> list[Photo]:
        """The photos of a set, in the order they arrived."""
        return await self._list(_photo, "SELECT * FROM photos WHERE set_id = ? ORDER BY id", (set_id,))

    async def count(self, set_id: int) -> int:
        """How many photos the set holds."""
        return await self._number("SELECT count(*) FROM photos WHERE set_id = ?", (set_id,))

    async def set_status(self, set_id: int, status: PhotoSetStatus) -> None:
        """Move a set to ``status`` (e.g. submitted for training, or back to collecting).

        Raises :class:`Conflict` when reopening it would give the user two collecting sets, and
        :class:`NotFound` for an unknown set.
        """
        status = PhotoSetStatus(status)
        try:
            changed = await self._write("UPDATE photo_sets SET status = ? WHERE id = ?", (status, set_id))
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"the user of photo set {set_id} already has a collecting set") from exc
        if not changed:
            raise NotFound(f"no photo set {set_id}")

    async def remove_photos(self, set_id: int, blob_keys: Iterable[str]) -> int:
        """Drop these photos from the set; returns how many were there. Deleting blobs is the caller's."""
        keys = list(dict.fromkeys(blob_keys))
        if not keys:
            return 0
        return await self._write(
            f"DELETE FROM photos WHERE set_id = ? AND blob_key IN ({placeholders(keys)})",
            (set_id, *keys),
        )

    async def discard_set(self, set_id: int) -> list[str]:
        """Mark the set discarded and drop its photos; returns their blob keys for the caller to delete.

        Discarding an unknown or already discarded set returns an empty list.
        """
        async with self._db.transaction() as conn:
            rows = await fetch_all(conn, "DELETE FROM photos WHERE set_id = ? RETURNING blob_key", (set_id,))
            await execute(conn, "UPDATE photo_sets SET status = ? WHERE id = ?", (PhotoSetStatus.DISCARDED, set_id))
        return sorted(row["blob_key"] for row in rows)
