from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import BinaryIO

import pytest

from pipeline.jobs import run_prefix as contract_run_prefix
from storage.blobs import InvalidBlobKey, LocalBlobStore
from storage.keys import community_style_key, photo_key, run_prefix, user_prefix


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_blob_is_a_file_under_the_root(blobs: LocalBlobStore) -> None:
    blobs.put_bytes("users/12/photos/abc.jpg", b"hello")
    assert blobs.path("users/12/photos/abc.jpg") == blobs.root / "users" / "12" / "photos" / "abc.jpg"
    assert files_under(blobs.root) == ["users/12/photos/abc.jpg"]
    assert (blobs.root / "users/12/photos/abc.jpg").stat().st_mode & 0o777 == 0o600, "photos are private"


def test_symlinked_folder_pointing_out_of_the_root_is_refused(tmp_path: Path, blobs: LocalBlobStore) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (blobs.root / "users").mkdir()
    (blobs.root / "users" / "evil").symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidBlobKey, match="outside"):
        blobs.get_bytes("users/evil/secret.txt")
    with pytest.raises(InvalidBlobKey, match="outside"):
        blobs.put_bytes("users/evil/new.txt", b"x")
    with pytest.raises(InvalidBlobKey, match="outside"):
        blobs.delete("users/evil/secret.txt")
    assert blobs.list("users") == []
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]

    # Deleting the prefix removes the link, never what it points to.
    blobs.delete_prefix("users")
    assert (outside / "secret.txt").read_text() == "secret"


def test_symlinked_file_pointing_out_of_the_root_is_refused(tmp_path: Path, blobs: LocalBlobStore) -> None:
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0")
    (blobs.root / "link").symlink_to(target)
    with pytest.raises(InvalidBlobKey):
        blobs.get_bytes("link")
    with pytest.raises(InvalidBlobKey):
        blobs.put_bytes("link", b"overwritten")
    assert target.read_text() == "root:x:0:0"


def test_a_failing_write_leaves_the_old_blob_and_no_temp_file(
    blobs: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs.put_bytes("users/1/photos/a.jpg", b"old content")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        blobs.put_bytes("users/1/photos/a.jpg", b"new content that never fully lands")
    with pytest.raises(OSError, match="No space"):
        blobs.put_bytes("users/1/photos/b.jpg", b"a brand new blob")
    monkeypatch.undo()

    assert blobs.get_bytes("users/1/photos/a.jpg") == b"old content"
    assert not blobs.exists("users/1/photos/b.jpg")
    assert files_under(blobs.root) == ["users/1/photos/a.jpg"]


def test_a_copy_interrupted_halfway_leaves_nothing(
    tmp_path: Path, blobs: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "lora.safetensors"
    src.write_bytes(b"x" * 4096)

    def half_then_interrupt(source: BinaryIO, target: BinaryIO, length: int = 0) -> None:
        target.write(source.read(2048))
        raise KeyboardInterrupt  # not an Exception: cleanup must still happen

    monkeypatch.setattr(shutil, "copyfileobj", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        blobs.put_file("runs/r1/lora.safetensors", src)
    assert files_under(blobs.root) == []


def test_list_skips_writes_in_progress(blobs: LocalBlobStore) -> None:
    blobs.put_bytes("users/1/photos/a.jpg", b"1")
    (blobs.root / "users" / "1" / ".tmp-abc.part").write_bytes(b"half")
    assert blobs.list("users/1") == ["users/1/photos/a.jpg"]


def test_deletes_leave_no_empty_folders(blobs: LocalBlobStore) -> None:
    for key in ("users/1/photos/a.jpg", "users/1/state", "users/12/photos/a.jpg"):
        blobs.put_bytes(key, b"x")
    blobs.delete("users/1/state")
    assert blobs.delete_prefix("users/1") == 1
    assert files_under(blobs.root) == ["users/12/photos/a.jpg"]
    assert sorted(p.name for p in (blobs.root / "users").iterdir()) == ["12"]
    blobs.delete("users/12/photos/a.jpg")
    assert list(blobs.root.iterdir()) == []


def test_key_helpers_agree_with_the_job_contract() -> None:
    assert run_prefix("run_12345678") == contract_run_prefix("run_12345678")
    assert user_prefix(7) == "users/7"
    assert photo_key(7, "abc") == "users/7/photos/abc"
    assert community_style_key(3, "noir.safetensors") == "communities/3/styles/noir.safetensors"
    with pytest.raises(InvalidBlobKey):
        photo_key(7, "../../etc")
