"""Where things live in the blob store. Everything of one user sits under :func:`user_prefix` or
under the :func:`run_prefix` of one of their runs, which is what forgetting a user deletes."""

from __future__ import annotations

from storage.blobs import validate_key

__all__ = ["community_style_key", "photo_key", "run_prefix", "user_prefix"]


def run_prefix(run_id: str) -> str:
    """Folder of a run's outputs: the same as ``pipeline.jobs.run_prefix`` (a test keeps them equal;
    storage does not import the job contract so that it stays free of pydantic)."""
    return f"runs/{run_id}"


def user_prefix(user_id: int) -> str:
    """Folder of everything stored for one user outside their runs."""
    return f"users/{int(user_id)}"


def photo_key(user_id: int, name: str) -> str:
    """Key for an uploaded photo (``BlobStore.put_photo`` sets the suffix)."""
    return validate_key(f"{user_prefix(user_id)}/photos/{name}")


def community_style_key(community_id: int, name: str) -> str:
    """Key for a style LoRA an admin uploaded: it belongs to the community, not to the admin,
    so it outlives the admin's /forget."""
    return validate_key(f"communities/{int(community_id)}/styles/{name}")
