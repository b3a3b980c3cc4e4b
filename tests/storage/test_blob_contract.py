"""One contract for every blob store backend: the local folder and an S3 bucket on a real S3 server
(moto in server mode). What only one backend can do wrong (symlinks, the read-through cache) is
tested beside it: test_blobs.py, test_s3_blobs.py."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest
from PIL import Image

from storage.blob_config import BlobStoreSettings, open_blob_store
from storage.blobs import BlobNotFound, BlobStore, InvalidBlobKey, LocalBlobStore, NotAnImage, validate_key
from tests.s3_server import S3Bucket, s3_bucket, s3_endpoint

__all__ = ["s3_bucket", "s3_endpoint"]

INVALID_KEYS = [
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
]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """Each backend as ``open_blob_store`` builds it from the settings."""
    if request.param == "local":
        settings = BlobStoreSettings()
    else:
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        settings = BlobStoreSettings(**bucket.settings())
    return open_blob_store(settings, tmp_path / "data")


def test_the_settings_choose_the_backend(store: BlobStore, tmp_path: Path) -> None:
    if isinstance(store, LocalBlobStore):
        assert store.location == f"local folder {tmp_path / 'data' / 'blobs'}"
    else:
        assert store.location.startswith("s3://facechain-test-") and "/facechain at http://127.0.0.1:" in store.location


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_are_refused_by_every_operation(store: BlobStore, key: str, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"x")
    with pytest.raises(InvalidBlobKey):
        validate_key(key)
    for operation in (store.exists, store.get_bytes, store.delete, store.path, store.size):
        with pytest.raises(InvalidBlobKey):
            operation(key)
    with pytest.raises(InvalidBlobKey):
        store.put_bytes(key, b"x")
    with pytest.raises(InvalidBlobKey):
        store.put_file(key, src)
    with pytest.raises(InvalidBlobKey):
        store.put_photo(key, _jpeg())
    assert store.list() == []


@pytest.mark.parametrize(
    "key", ["a", "users/12/photos/abc.jpg", "runs/Ab_9-x/outcome.json", "x/k=v/y.tar.gz", "_a/b-c"]
)
def test_valid_keys_round_trip(store: BlobStore, key: str) -> None:
    store.put_bytes(key, b"hello")
    assert store.exists(key)
    assert store.get_bytes(key) == b"hello"
    assert store.size(key) == 5
    assert store.path(key).read_bytes() == b"hello"
    assert store.path(key).name == key.rsplit("/", 1)[-1], "loaders look at the file name's suffix"
    assert store.list() == [key]


def test_put_replaces_and_missing_blobs_raise(store: BlobStore) -> None:
    store.put_bytes("a/b", b"one")
    assert store.path("a/b").read_bytes() == b"one"
    store.put_bytes("a/b", b"two!")
    assert store.get_bytes("a/b") == b"two!"
    assert store.path("a/b").read_bytes() == b"two!", "a replaced blob is never read from a stale copy"
    assert store.size("a/b") == 4
    for operation in (store.get_bytes, store.path, store.size):
        with pytest.raises(BlobNotFound):
            operation("a/missing")
    with pytest.raises(BlobNotFound):
        store.path("a")  # a folder is not a blob
    assert not store.exists("a")
    assert not store.exists("a/missing")


def test_put_file_copies_a_large_file(tmp_path: Path, store: BlobStore) -> None:
    src = tmp_path / "lora.safetensors"
    src.write_bytes(os.urandom(6 * 1024 * 1024 + 5))  # above S3's 5 MiB multipart part size
    store.put_file("runs/r1/lora.safetensors", src)
    assert store.get_bytes("runs/r1/lora.safetensors") == src.read_bytes()
    assert store.size("runs/r1/lora.safetensors") == src.stat().st_size
    assert store.path("runs/r1/lora.safetensors").read_bytes() == src.read_bytes()


def test_a_reader_sees_the_old_blob_or_the_new_one_never_part_of_one(store: BlobStore) -> None:
    size = 2 * 1024 * 1024
    versions = [bytes([n]) * size for n in range(3)]
    store.put_bytes("runs/r1/face_lora.safetensors", versions[0])
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for n in range(12):
                store.put_bytes("runs/r1/face_lora.safetensors", versions[n % 3])
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not stop.is_set() or reads < 3:
        data = store.get_bytes("runs/r1/face_lora.safetensors")
        copy = store.path("runs/r1/face_lora.safetensors").read_bytes()
        for blob in (data, copy):
            assert blob in versions, f"a torn read: {len(blob)} bytes"
        reads += 1
    thread.join()
    assert not errors, errors
    assert reads >= 3


def test_list_is_folder_aligned(store: BlobStore) -> None:
    store.put_bytes("users/1/photos/a.jpg", b"1")
    store.put_bytes("users/1/x", b"2")
    store.put_bytes("users/12/photos/a.jpg", b"3")
    assert store.list("users/1") == ["users/1/photos/a.jpg", "users/1/x"]
    assert store.list("users/1/") == ["users/1/photos/a.jpg", "users/1/x"]
    assert store.list("users/nobody") == []
    assert store.list() == ["users/1/photos/a.jpg", "users/1/x", "users/12/photos/a.jpg"]
    with pytest.raises(InvalidBlobKey):
        store.list("../users")


def test_delete_and_delete_prefix_as_forget_uses_them(store: BlobStore) -> None:
    for key in ("users/1/photos/a.jpg", "users/1/photos/b.jpg", "users/1/state", "users/12/photos/a.jpg"):
        store.put_bytes(key, b"x")
    assert store.delete("users/1/state") is True
    assert store.delete("users/1/state") is False
    assert not store.exists("users/1/state")
    assert store.delete_prefix("users/1/") == 2
    assert store.delete_prefix("users/1") == 0
    assert store.list() == ["users/12/photos/a.jpg"], "another user's blobs stay"
    for root in ("", "/"):
        with pytest.raises(InvalidBlobKey):
            store.delete_prefix(root)
    assert store.list() == ["users/12/photos/a.jpg"]


def test_put_photo_stores_a_cleaned_photo_under_its_format(store: BlobStore) -> None:
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    stored = store.put_photo("users/1/photos/p1", _jpeg(exif=exif))
    assert stored.key == "users/1/photos/p1.jpg" and stored.mime == "image/jpeg"
    data = store.get_bytes(stored.key)
    assert store.size(stored.key) == stored.size == len(data)
    assert b"SecretCam" not in data
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (stored.width, stored.height) == (32, 24)

    with pytest.raises(NotAnImage):
        store.put_photo("users/1/photos/p2", b"GIF89a not a photo")
    assert store.list("users/1") == ["users/1/photos/p1.jpg"], "a refused upload stores nothing"


def test_many_threads_write_distinct_keys(store: BlobStore) -> None:
    def write(n: int) -> None:
        for i in range(5):
            store.put_bytes(f"runs/r{n}/portrait_{i}.jpg", f"{n}-{i}".encode())

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(store.list("runs")) == 20
    assert store.get_bytes("runs/r3/portrait_4.jpg") == b"3-4"


def _jpeg(exif: Image.Exif | None = None) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 100, 50)).save(out, "JPEG", exif=exif or Image.Exif())
    return out.getvalue()
