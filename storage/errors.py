"""Errors the database layer raises. The blob store has its own (see :mod:`storage.blobs`)."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every database-layer error."""


class SchemaTooNew(StorageError):
    """The database was written by a newer facechain-bot than this one."""


class MigrationError(StorageError):
    """A migration file is malformed, or failed to apply (the database is left unchanged)."""


class NotFound(StorageError, LookupError):
    """The row an operation needs does not exist."""


class PhotoSetClosed(StorageError):
    """Photos can only be added to a set that is still collecting."""


class Conflict(StorageError):
    """The change would break an invariant (e.g. two collecting photo sets for one user)."""
