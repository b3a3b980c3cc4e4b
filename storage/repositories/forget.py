"""Forgetting a user: every row and every blob of theirs.

The rows go in one transaction (the schema cascades from ``users``), and in that same transaction
the blob keys and prefixes to delete are queued in ``blob_deletions``. The files are deleted after
the commit and each queue entry is removed once its files are gone, so a crash or a disk error in
between leaves a queue that :func:`purge_blob_deletions` finishes later, never a forgotten user
whose files can no longer be found.

Deleted rows leave no copy behind in the database files: the connection runs with
``secure_delete`` (freed space is zeroed), and the WAL, which still holds the pages as they were
before the delete, is checkpointed and truncated afterwards.
"""

from __future__ import annotations

import asyncio

from storage._time import to_db
from storage.blobs import BlobStore, InvalidBlobKey
from storage.db import Database
from storage.errors import StorageError
from storage.keys import run_prefix, user_prefix
from storage.repositories._base import execute, fetch_all


async def forget_user(db: Database, user_id: int, blobs: BlobStore) -> tuple[str, ...]:
    """Delete every row of the user and every blob of theirs (idempotent); returns their run ids.

    Blobs: their photos, the LoRA and template of their models, their portraits, and everything
    under ``users/{user_id}/`` and ``runs/{run_id}/`` of each of their runs. Community styles they
    created stay with the community, with ``created_by`` cleared. Cancel the user's active runs
    first: a worker still running writes under ``runs/{run_id}/`` after this returns. The run ids
    returned name what the queue keeps about them (the caller deletes those keys).
    """
    async with db.transaction() as conn:
        rows = await fetch_all(
            conn,
            "SELECT blob_key AS k FROM photos WHERE user_id = :u"
            " UNION SELECT lora_key FROM face_models WHERE user_id = :u"
            " UNION SELECT template_key FROM face_models WHERE user_id = :u"
            " UNION SELECT blob_key FROM portraits WHERE user_id = :u",
            {"u": user_id},
        )
        keys = {row["k"] for row in rows if row["k"]}
        runs = await fetch_all(conn, "SELECT id FROM runs WHERE user_id = ?", (user_id,))
        keys.add(user_prefix(user_id) + "/")
        keys.update(run_prefix(row["id"]) + "/" for row in runs)
        queued_at = to_db(db.now())
        await conn.executemany(
            "INSERT OR IGNORE INTO blob_deletions (key, queued_at) VALUES (?, ?)",
            [(key, queued_at) for key in sorted(keys)],
        )
        # Identities, conversation, photo sets and photos, models, runs and portraits, usage:
        # all cascade from the user row; custom_styles.created_by is set to NULL.
        await execute(conn, "DELETE FROM users WHERE id = ?", (user_id,))
    try:
        await purge_blob_deletions(db, blobs)  # checkpoints the WAL once the entries are gone
    except BaseException:
        await db.checkpoint()  # the rows are gone all the same
        raise
    return tuple(sorted(row["id"] for row in runs))


async def purge_blob_deletions(db: Database, blobs: BlobStore) -> int:
    """Delete the queued blobs; returns how many queue entries were completed.

    Entries whose deletion fails stay queued and a :class:`StorageError` is raised after the rest
    were tried. Call it at startup to finish an interrupted :func:`forget_user`.
    """
    async with db.locked() as conn:
        rows = await fetch_all(conn, "SELECT key FROM blob_deletions ORDER BY key")
    done = 0
    failures: list[OSError] = []
    for row in rows:
        key: str = row["key"]
        try:
            if key.endswith("/"):
                await asyncio.to_thread(blobs.delete_prefix, key)
            else:
                await asyncio.to_thread(blobs.delete, key)
        except InvalidBlobKey:
            pass  # no blob can be stored under such a name: nothing to delete
        except OSError as exc:
            failures.append(exc)
            continue
        async with db.locked() as conn:
            await execute(conn, "DELETE FROM blob_deletions WHERE key = ?", (key,))
        done += 1
    if done:
        # The entries named a forgotten user's folders and runs: no old copy of them stays in the WAL.
        await db.checkpoint()
    if failures:
        raise StorageError(f"{len(failures)} blob deletions failed and stay queued: {failures[0]}") from failures[0]
    return done
