"""/forget: every row and every blob of a user goes; nobody else's does."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from storage.blobs import BlobStore
from storage.db import Database
from storage.errors import StorageError
from storage.keys import community_style_key, photo_key, run_prefix
from storage.models import Delivery, PhotoSetStatus, Platform, RunKind, RunStatus
from storage.repositories import Repositories

DAY = date(2026, 3, 1)


@dataclass
class Person:
    """What a test user owns, to look for after /forget."""

    user_id: int
    #: Strings that only this person's data contains.
    markers: set[str] = field(default_factory=set)
    run_ids: list[str] = field(default_factory=list)


def jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (seed * 37 % 256, seed * 91 % 256, seed * 13 % 256)).save(out, "JPEG")
    return out.getvalue()


async def populate(repos: Repositories, blobs: BlobStore, name: str, community_id: int, seed: int) -> Person:
    """A user with everything: an identity, state, photo sets, a model, runs, portraits, usage."""
    user = await repos.users.get_or_create(Platform.TELEGRAM, f"tg-{name}", f"{name} Display")
    person = Person(user.id, markers={f"tg-{name}", f"{name} Display", f"{name}-state"})
    await repos.conversations.set_state(user.id, {"mode": "collecting", "note": f"{name}-state"})

    # A submitted set that trained a model, and a set still collecting.
    trained = await repos.photos.open_set(user.id)
    for n in range(3):
        stored = await _put_photo(repos, blobs, user.id, trained.id, f"{name}-{n}", seed + n)
        person.markers |= {stored.key, stored.sha256}
    await repos.photos.set_status(trained.id, PhotoSetStatus.SUBMITTED)
    collecting = await repos.photos.open_set(user.id)
    stored = await _put_photo(repos, blobs, user.id, collecting.id, f"{name}-new", seed + 10)
    person.markers |= {stored.key, stored.sha256}
    # Something under the user's folder that no row points to.
    blobs.put_bytes(f"users/{user.id}/exports/{name}.zip", b"zip")

    train_run = f"{name}_train_1"
    model = await repos.models.create(user.id, trained.id, "woman")
    await repos.runs.create(train_run, user.id, RunKind.TRAIN, Delivery(Platform.TELEGRAM, f"chat-{name}"))
    lora, template = f"{run_prefix(train_run)}/lora.safetensors", f"{run_prefix(train_run)}/template.jpg"
    blobs.put_bytes(lora, b"lora " + name.encode())
    blobs.put_bytes(template, jpeg(seed))
    blobs.put_bytes(f"{run_prefix(train_run)}/outcome.json", b"{}")
    await repos.models.mark_ready(model.id, lora, template, f"<fcsks>, {name}-trigger", "woman")
    await repos.runs.finish(train_run, RunStatus.DONE)
    person.markers |= {lora, template, f"{name}-trigger"}

    gen_run = f"{name}_gen_0001"
    delivery = Delivery(Platform.DISCORD, f"chan-{name}", f"msg-{name}", community_id)
    await repos.runs.create(gen_run, user.id, RunKind.GENERATE, delivery, model.id, "noir", 2)
    await repos.runs.update_progress(gen_run, "ranking", 0.9)
    for n in range(2):
        key = f"{run_prefix(gen_run)}/portrait-{n}.png"
        blobs.put_bytes(key, b"png")
        await repos.portraits.add(gen_run, user.id, key, seed + n, 0.5, "noir")
        person.markers.add(key)
    # Candidates the worker wrote but never reported.
    blobs.put_bytes(f"{run_prefix(gen_run)}/candidates/7.png", b"png")
    await repos.runs.finish(gen_run, RunStatus.DONE)

    # A run still queued, whose worker already started writing.
    queued_run = f"{name}_gen_0002"
    await repos.runs.create(queued_run, user.id, RunKind.GENERATE, delivery, model.id, "anime", 1)
    blobs.put_bytes(f"{run_prefix(queued_run)}/partial.png", b"png")

    person.run_ids = [train_run, gen_run, queued_run]
    person.markers |= set(person.run_ids) | {f"chat-{name}", f"chan-{name}", f"msg-{name}"}
    await repos.usage.increment(user.id, community_id, DAY, n=2)
    await repos.usage.increment(user.id, None, DAY)
    return person


async def _put_photo(repos: Repositories, blobs: BlobStore, user_id: int, set_id: int, name: str, seed: int) -> Any:
    stored = blobs.put_photo(photo_key(user_id, name), jpeg(seed))
    photo = await repos.photos.add_photo(
        set_id,
        user_id,
        stored.key,
        stored.sha256,
        stored.size,
        stored.width,
        stored.height,
        stored.mime,
    )
    assert photo is not None
    return stored


async def dump(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table (SQLite's own bookkeeping tables hold counters, not user data)."""
    names = [
        row[0]
        for row in await db.conn.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    tables: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        rows = await db.conn.execute_fetchall(f'SELECT * FROM "{name}" ORDER BY 1, 2')
        tables[name] = [dict(row) for row in rows]
    return tables


async def user_columns(db: Database) -> dict[str, set[str]]:
    """Per table, the columns that hold a user id: foreign keys to users, and any *user_id column."""
    found: dict[str, set[str]] = {"users": {"id"}}
    for table in await dump(db):
        for fk in await db.conn.execute_fetchall(f'PRAGMA foreign_key_list("{table}")'):
            if fk["table"] == "users":
                found.setdefault(table, set()).add(fk["from"])
        for column in await db.conn.execute_fetchall(f'PRAGMA table_info("{table}")'):
            if column["name"].endswith("user_id"):
                found.setdefault(table, set()).add(column["name"])
    return found


def traces(tables: dict[str, list[dict[str, Any]]], columns: dict[str, set[str]], person: Person) -> set[str]:
    """Where ``person`` still appears: user-id columns equal to their id, or any cell with a marker."""
    hits: set[str] = set()
    needles = person.markers | {f"users/{person.user_id}/"}
    for table, rows in tables.items():
        for row in rows:
            for column, value in row.items():
                if column in columns.get(table, ()) and value == person.user_id:
                    hits.add(f"{table}.{column}")
                if isinstance(value, str) and any(n in value for n in needles):
                    hits.add(f"{table}.{column} ~ marker")
    return hits


def blob_files(root: Path) -> dict[str, str]:
    """Every file under the blob root (hidden ones included) → SHA-256 of its content."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in root.rglob("*")
        if path.is_file()
    }


def owned_by(key: str, person: Person) -> bool:
    return key.startswith(f"users/{person.user_id}/") or any(
        key.startswith(run_prefix(run_id) + "/") for run_id in person.run_ids
    )


@pytest.fixture
async def world(repos: Repositories, blobs: BlobStore) -> tuple[Person, Person, int]:
    community = await repos.communities.get_or_create(Platform.DISCORD, "guild-1")
    ada = await populate(repos, blobs, "ada", community.id, seed=1)
    bob = await populate(repos, blobs, "bob", community.id, seed=100)
    # Ada, an admin, added a style: it belongs to the community and stays.
    style_key = community_style_key(community.id, "ada-style.safetensors")
    blobs.put_bytes(style_key, b"style lora")
    await repos.communities.add_custom_style(
        community.id, "ada-style", "a style", lora_key=style_key, created_by=ada.user_id
    )
    return ada, bob, community.id


async def test_forget_user_removes_every_row_and_blob_of_theirs_only(
    repos: Repositories, blobs: BlobStore, world: tuple[Person, Person, int]
) -> None:
    ada, bob, community_id = world
    columns = await user_columns(repos.db)
    before = await dump(repos.db)
    files_before = blob_files(blobs.root)

    # The scan sees both people before: it can fail.
    ada_before = traces(before, columns, ada)
    assert {"users.id", "identities.user_id", "conversations.user_id", "photo_sets.user_id", "photos.user_id",
            "face_models.user_id", "runs.user_id", "portraits.user_id", "usage_counters.user_id",
            "custom_styles.created_by"} <= ada_before  # fmt: skip
    assert traces(before, columns, bob)
    assert any(owned_by(key, ada) for key in files_before)

    await repos.forget_user(ada.user_id, blobs)

    after = await dump(repos.db)
    assert traces(after, columns, ada) == set()
    assert after.keys() == before.keys()
    # Everyone else's rows are exactly as they were; only the style's created_by was cleared.
    for table, rows in before.items():
        user_cols = columns.get(table, set()) - {"created_by"}
        expected = [r for r in rows if not any(r[c] == ada.user_id for c in user_cols)]
        if table == "custom_styles":
            expected = [{**r, "created_by": None} if r["created_by"] == ada.user_id else r for r in expected]
        assert after[table] == expected, table
    assert after["blob_deletions"] == []
    assert len(after["custom_styles"]) == 1

    # Every file of Ada is gone (registered or not); every other file is byte-identical.
    files_after = blob_files(blobs.root)
    assert files_after == {k: v for k, v in files_before.items() if not owned_by(k, ada)}
    assert not any(marker in key for key in files_after for marker in ada.run_ids)
    assert not (blobs.root / "users" / str(ada.user_id)).exists()
    assert f"communities/{community_id}/styles/ada-style.safetensors" in files_after
    assert any(owned_by(key, bob) for key in files_after)

    # Ada can start over, as somebody new: her old id is never reused.
    again = await repos.users.get_or_create(Platform.TELEGRAM, "tg-ada")
    assert again.id != ada.user_id
    assert await repos.photos.current_set(again.id) is None
    assert await repos.models.latest(again.id) is None


async def test_forget_is_idempotent_and_ignores_unknown_users(
    repos: Repositories, blobs: BlobStore, world: tuple[Person, Person, int]
) -> None:
    ada, _, _ = world
    await repos.forget_user(ada.user_id, blobs)
    files = blob_files(blobs.root)
    await repos.forget_user(ada.user_id, blobs)
    await repos.forget_user(9999, blobs)
    assert blob_files(blobs.root) == files


async def test_an_interrupted_forget_finishes_its_blob_deletions_later(
    repos: Repositories, blobs: BlobStore, world: tuple[Person, Person, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    ada, _, _ = world

    def disk_error(prefix: str) -> int:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(blobs, "delete_prefix", disk_error)
    with pytest.raises(StorageError, match="stay queued"):
        await repos.forget_user(ada.user_id, blobs)
    # The rows are gone, the files under the prefixes are not, and what is left is queued.
    assert await repos.users.get(ada.user_id) is None
    assert any(owned_by(key, ada) for key in blob_files(blobs.root))
    queued = [row["key"] for row in await repos.db.conn.execute_fetchall("SELECT key FROM blob_deletions")]
    assert f"users/{ada.user_id}/" in queued

    monkeypatch.undo()
    assert await repos.purge_blob_deletions(blobs) == len(queued)
    assert not any(owned_by(key, ada) for key in blob_files(blobs.root))
    assert list(await repos.db.conn.execute_fetchall("SELECT * FROM blob_deletions")) == []


def file_bytes(db_path: Path) -> bytes:
    """The database file and its WAL as they are on disk (the WAL may be absent or empty)."""
    wal = Path(f"{db_path}-wal")
    return db_path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def wal_size(db_path: Path) -> int:
    return Path(f"{db_path}-wal").stat().st_size


async def test_forgotten_rows_leave_no_bytes_in_the_database_file_or_its_wal(
    repos: Repositories, blobs: BlobStore, world: tuple[Person, Person, int], tmp_path: Path
) -> None:
    ada, bob, _ = world
    db_path = tmp_path / "bot.sqlite3"
    needles = {m.encode() for m in ada.markers} | {f"users/{ada.user_id}/".encode()}
    before = file_bytes(db_path)
    assert {n for n in needles if n in before} == needles, "the scan finds every marker before"

    run_ids = await repos.forget_user(ada.user_id, blobs)

    assert sorted(run_ids) == sorted(ada.run_ids)
    after = file_bytes(db_path)
    assert {n.decode() for n in needles if n in after} == set(), "old pages in the WAL or free space"
    assert wal_size(db_path) == 0, "the WAL was checkpointed and truncated"
    assert all(m.encode() in after for m in bob.markers), "everybody else is still there"
