"""What the service writes is its own: files 0600, folders 0700, whatever the umask says."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from storage.blobs import LocalBlobStore
from storage.db import open_database
from storage.files import make_private_dirs, restrict_tree
from tests.storage.test_images import encode


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def modes_under(root: Path) -> dict[str, int]:
    """Relative path → mode of ``root`` and everything under it."""
    found = {".": mode(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = mode(path)
    return found


def not_private(root: Path) -> dict[str, str]:
    """Everything under ``root`` that others could read: folders not 0700, files not 0600."""
    wrong = {}
    for name, bits in modes_under(root).items():
        wanted = 0o700 if (root / name).is_dir() else 0o600
        if bits != wanted:
            wrong[name] = oct(bits)
    return wrong


@pytest.fixture(params=[0o022, 0o000, 0o277], ids=["umask-022", "umask-000", "umask-277"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """A umask for the test (restored after): permissive, or one that even masks the owner's write bit."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


async def test_a_new_database_its_wal_and_its_folders_are_private(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "data" / "deep" / "bot.sqlite3"

    async with await open_database(path) as db:
        await db.conn.execute("CREATE TABLE t (x)")
        await db.conn.execute("INSERT INTO t VALUES ('secret')")
        wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
        # WAL mode keeps both companions while the database is open (mode() fails on a missing one).
        assert (mode(path), mode(wal), mode(shm)) == (0o600, 0o600, 0o600)

    assert mode(tmp_path / "data") == 0o700 and mode(tmp_path / "data" / "deep") == 0o700


async def test_an_existing_readable_database_is_tightened_on_open(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "bot.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        os.chmod(file, 0o644)

    async with await open_database(path):
        assert (mode(path), mode(Path(f"{path}-wal")), mode(Path(f"{path}-shm"))) == (0o600, 0o600, 0o600)
    conn.close()


def test_blobs_and_their_folders_are_private(tmp_path: Path, umask: int) -> None:
    source = tmp_path / "lora.safetensors"
    source.write_bytes(b"weights")
    os.chmod(source, 0o644)

    blobs = LocalBlobStore(tmp_path / "data" / "blobs")
    blobs.put_bytes("runs/run-0001/outcome.json", b"{}")
    blobs.put_file("runs/run-0001/face_lora.safetensors", source)
    blobs.put_photo("users/7/photos/3/a.jpg", encode(Image.new("RGB", (8, 8)), "JPEG"))

    assert not_private(tmp_path / "data") == {}
    assert len(blobs.list()) == 3


def test_an_existing_open_blob_root_is_tightened(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)

    LocalBlobStore(root)

    assert mode(root) == 0o700


def test_private_helpers_leave_links_and_their_targets_alone(tmp_path: Path, umask: int) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    os.chmod(outside, 0o644)
    tree = tmp_path / "models" / "a" / "b"
    make_private_dirs(tree)
    (tree / "weights.bin").write_bytes(b"w")
    (tree / "link").symlink_to(outside)

    restrict_tree(tmp_path / "models")

    assert mode(tmp_path / "models") == mode(tree) == 0o700
    assert mode(tree / "weights.bin") == 0o600
    assert mode(outside) == 0o644, "a link is not followed"
