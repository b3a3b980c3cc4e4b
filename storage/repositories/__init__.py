"""The repositories: all SQL of facechain-bot, returning the records of :mod:`storage.models`.

Build one :class:`Repositories` from the :class:`~storage.db.Database` the bot opened at startup::

    db = await open_database(settings.database_path)
    repos = Repositories(db)
    user = await repos.users.get_or_create(Platform.TELEGRAM, "12345", "Ada")
"""

from __future__ import annotations

from storage.blobs import BlobStore
from storage.db import Database
from storage.repositories.communities import CommunitiesRepository, QuotaScope
from storage.repositories.conversations import ConversationsRepository
from storage.repositories.face_models import FaceModelsRepository
from storage.repositories.forget import forget_user, purge_blob_deletions
from storage.repositories.identities import UsersRepository
from storage.repositories.photos import PhotosRepository
from storage.repositories.portraits import PortraitsRepository
from storage.repositories.runs import RunsRepository
from storage.repositories.snapshots import SnapshotsRepository
from storage.repositories.usage import UsageRepository

__all__ = [
    "CommunitiesRepository",
    "ConversationsRepository",
    "FaceModelsRepository",
    "PhotosRepository",
    "PortraitsRepository",
    "QuotaScope",
    "Repositories",
    "RunsRepository",
    "SnapshotsRepository",
    "UsageRepository",
    "UsersRepository",
]


class Repositories:
    """Every repository, sharing one database connection."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.users = UsersRepository(db)
        self.conversations = ConversationsRepository(db)
        self.photos = PhotosRepository(db)
        self.models = FaceModelsRepository(db)
        self.runs = RunsRepository(db)
        self.communities = CommunitiesRepository(db)
        self.usage = UsageRepository(db)
        self.portraits = PortraitsRepository(db)
        self.snapshots = SnapshotsRepository(db)

    async def forget_user(self, user_id: int, blobs: BlobStore) -> tuple[str, ...]:
        """Delete every row and blob of the user; returns their run ids (see :func:`.forget.forget_user`)."""
        return await forget_user(self.db, user_id, blobs)

    async def purge_blob_deletions(self, blobs: BlobStore) -> int:
        """Finish blob deletions an interrupted :meth:`forget_user` left queued."""
        return await purge_blob_deletions(self.db, blobs)
