"""Face models: one trained LoRA per version, per user."""

from __future__ import annotations

import sqlite3

from storage.errors import Conflict, NotFound
from storage.models import FaceModel, ModelStatus
from storage.repositories._base import Repository, placeholders, record

_OPEN = (ModelStatus.PENDING, ModelStatus.TRAINING)


def _model(row: sqlite3.Row) -> FaceModel:
    return record(FaceModel, row)


class FaceModelsRepository(Repository):
    """Versions count up per user: 1, 2, 3... A model ends ready, failed or cancelled, once."""

    async def create(self, user_id: int, photo_set_id: int | None, subject: str | None = None) -> FaceModel:
        """A pending model with the next version number of this user."""
        try:
            # One INSERT ... SELECT max() + 1 statement: no other write can slip in between.
            return await self._returning(
                _model,
                "INSERT INTO face_models (user_id, version, status, photo_set_id, subject, created_at)"
                " SELECT ?, coalesce(max(version), 0) + 1, ?, ?, ?, ? FROM face_models WHERE user_id = ?"
                " RETURNING *",
                (user_id, ModelStatus.PENDING, photo_set_id, subject, self._now(), user_id),
            )
        except sqlite3.IntegrityError as exc:
            if "another user" in str(exc):
                raise Conflict(f"photo set {photo_set_id} belongs to another user") from exc
            raise NotFound(f"no user {user_id} or photo set {photo_set_id}") from exc

    async def get(self, model_id: int) -> FaceModel | None:
        """The model with this id, whatever its status."""
        return await self._get(_model, "SELECT * FROM face_models WHERE id = ?", (model_id,))

    async def for_user(self, user_id: int) -> list[FaceModel]:
        """Every model of the user, newest version first."""
        return await self._list(_model, "SELECT * FROM face_models WHERE user_id = ? ORDER BY version DESC", (user_id,))

    async def latest(self, user_id: int) -> FaceModel | None:
        """The newest model of the user, whatever its status."""
        return await self._get(
            _model, "SELECT * FROM face_models WHERE user_id = ? ORDER BY version DESC LIMIT 1", (user_id,)
        )

    async def latest_ready(self, user_id: int) -> FaceModel | None:
        """The newest model that can generate portraits (a newer one may be training)."""
        return await self._get(
            _model,
            "SELECT * FROM face_models WHERE user_id = ? AND status = ? ORDER BY version DESC LIMIT 1",
            (user_id, ModelStatus.READY),
        )

    async def mark_training(self, model_id: int) -> bool:
        """pending → training; False when the model is not pending."""
        return bool(
            await self._write(
                "UPDATE face_models SET status = ? WHERE id = ? AND status = ?",
                (ModelStatus.TRAINING, model_id, ModelStatus.PENDING),
            )
        )

    async def mark_ready(
        self, model_id: int, lora_key: str, template_key: str | None, trigger: str, subject: str | None
    ) -> bool:
        """Record the trained LoRA; False (and no change) when the model already ended."""
        return bool(
            await self._write(
                "UPDATE face_models SET status = ?, lora_key = ?, template_key = ?, trigger = ?,"
                " subject = coalesce(?, subject), error_code = NULL, finished_at = ?"
                f" WHERE id = ? AND status IN ({placeholders(_OPEN)})",
                (ModelStatus.READY, lora_key, template_key, trigger, subject, self._now(), model_id, *_OPEN),
            )
        )

    async def mark_failed(self, model_id: int, error_code: str, status: ModelStatus = ModelStatus.FAILED) -> bool:
        """End a model without a LoRA (failed or cancelled); False when it already ended."""
        status = ModelStatus(status)
        if status not in (ModelStatus.FAILED, ModelStatus.CANCELLED):
            raise ValueError("status must be FAILED or CANCELLED")
        return bool(
            await self._write(
                "UPDATE face_models SET status = ?, error_code = ?, finished_at = ?"
                f" WHERE id = ? AND status IN ({placeholders(_OPEN)})",
                (status, error_code, self._now(), model_id, *_OPEN),
            )
        )
