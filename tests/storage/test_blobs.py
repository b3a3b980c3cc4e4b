from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import BinaryIO

import pytest

from pipeline.jobs import run_prefix as contract_run_prefix
from storage.blobs import BlobNotFound, BlobStore, InvalidBlobKey, validate_key
from storage.keys import community_style_key, photo_key, run_prefix, user_prefix


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "key",
    [
        "../x",
        "users/../../x",
        "/etc/passwd",
        "a//b",
        "a/./b",
        "a/b/",
        "./a",
        "a\\b",
        "..\\x",
        "",
        ".hidden",
        "a/.tmp-123.part",
        "-rf",
        "users/1/pho to.jpg",
        "users/1/ph\x00oto.jpg",
        "C:/x",
        "users/ü.jpg",
        "a" * 513,
        "a/" + "b" * 201,
    ],
)
def test_invalid_keys_are_refused_everywhere(blobs: BlobStore, key: str) -> None:
    with pytest.raises(InvalidBlobKey):
        validate_key(key)
    for operation in (blobs.exists, blobs.get_bytes, blobs.delete, blobs.path, blobs.size):
        with pytest.raises(InvalidBlobKey):
            operation(key)
    with pytest.raises(InvalidBlobKey):
        blobs.put_bytes(key, b"x")
    assert files_under(blobs.root) == []


@pytest.mark.parametrize(
    "key", ["a", "users/12/photos/abc.jpg", "runs/Ab_9-x/outcome.json", "x/k=v/y.tar.gz", "_a/b-c"]
)
def test_valid_keys_round_trip(blobs: BlobStore, key: str) -> None:
    blobs.put_bytes(key, b"hello")
    assert blobs.exists(key)
    assert blobs.get_bytes(key) == b"hello"
    assert blobs.size(key) == 5
    assert blobs.path(key) == blobs.root / key
    assert blobs.list() == [key]


def test_symlinked_folder_pointing_out_of_the_root_is_refused(tmp_path: Path, blobs: BlobStore) -> None:
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


def test_symlinked_file_pointing_out_of_the_root_is_refused(tmp_path: Path, blobs: BlobStore) -> None:
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0")
    (blobs.root / "link").symlink_to(target)
    with pytest.raises(InvalidBlobKey):
        blobs.get_bytes("link")
    with pytest.raises(InvalidBlobKey):
        blobs.put_bytes("link", b"overwritten")
    assert target.read_text() == "root:x:0:0"


def test_put_replaces_and_get_missing_raises(blobs: BlobStore) -> None:
    blobs.put_bytes("a/b", b"one")
    blobs.put_bytes("a/b", b"two")
    assert blobs.get_bytes("a/b") == b"two"
    with pytest.raises(BlobNotFound):
        blobs.get_bytes("a/missing")
    with pytest.raises(BlobNotFound):
        blobs.path("a")  # a folder is not a blob
    assert not blobs.exists("a")


def test_put_file_copies(tmp_path: Path, blobs: BlobStore) -> None:
    src = tmp_path / "lora.safetensors"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    blobs.put_file("runs/r1/lora.safetensors", src)
    assert blobs.get_bytes("runs/r1/lora.safetensors") == src.read_bytes()


def test_a_failing_write_leaves_the_old_blob_and_no_temp_file(
    blobs: BlobStore, monkeypatch: pytest.MonkeyPatch
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
    tmp_path: Path, blobs: BlobStore, monkeypatch: pytest.MonkeyPatch
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


def test_list_is_folder_aligned_and_skips_writes_in_progress(blobs: BlobStore) -> None:
    blobs.put_bytes("users/1/photos/a.jpg", b"1")
    blobs.put_bytes("users/1/x", b"2")
    blobs.put_bytes("users/12/photos/a.jpg", b"3")
    (blobs.root / "users" / "1" / ".tmp-abc.part").write_bytes(b"half")
    assert blobs.list("users/1") == ["users/1/photos/a.jpg", "users/1/x"]
    assert blobs.list("users/1/") == ["users/1/photos/a.jpg", "users/1/x"]
    assert blobs.list("users/nobody") == []
    assert blobs.list() == ["users/1/photos/a.jpg", "users/1/x", "users/12/photos/a.jpg"]


def test_delete_and_delete_prefix(blobs: BlobStore) -> None:
    for key in ("users/1/photos/a.jpg", "users/1/photos/b.jpg", "users/1/state", "users/12/photos/a.jpg"):
        blobs.put_bytes(key, b"x")
    assert blobs.delete("users/1/state") is True
    assert blobs.delete("users/1/state") is False
    assert blobs.delete_prefix("users/1/") == 2
    assert blobs.delete_prefix("users/1") == 0
    assert files_under(blobs.root) == ["users/12/photos/a.jpg"]
    # Empty folders do not pile up.
    assert sorted(p.name for p in (blobs.root / "users").iterdir()) == ["12"]
    with pytest.raises(InvalidBlobKey):
        blobs.delete_prefix("")
    with pytest.raises(InvalidBlobKey):
        blobs.delete_prefix("/")


def test_key_helpers_agree_with_the_job_contract() -> None:
    assert run_prefix("run_12345678") == contract_run_prefix("run_12345678")
    assert user_prefix(7) == "users/7"
    assert photo_key(7, "abc") == "users/7/photos/abc"
    assert community_style_key(3, "noir.safetensors") == "communities/3/styles/noir.safetensors"
    with pytest.raises(InvalidBlobKey):
        photo_key(7, "../../etc")
