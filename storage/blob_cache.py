"""A bounded local read-through cache of remote blobs, for readers that need a file path.

diffusers and peft load a LoRA from a path on disk, so a remote blob store hands them a copy in this
folder. An entry is named by the blob's key and version (its ETag): a blob replaced under the same
key gets a new entry and the old one goes. Entries appear atomically (written to a temporary file,
flushed, then renamed), so a reader in another thread or process never sees half a file. The folder
is kept under ``max_bytes`` by removing the least recently used entries; an entry used in the last
``keep_recent_s`` seconds is never removed (a job may be about to open it), so the bound can be
passed briefly while several large blobs are in use at once.

Layout: ``{root}/{sha256(key)[:32]}/{sha256(version)[:16]}/{file name of the key}`` (the file name is
kept because loaders look at the suffix, e.g. ``.safetensors``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from storage.files import make_private_dirs, remove_empty_folders, write_atomically

_TEMP_DIR = ".tmp"


class BlobCache:
    """Local copies of remote blobs, bounded in size; safe for several threads and processes."""

    def __init__(self, root: Path, *, max_bytes: int, keep_recent_s: float = 60.0) -> None:
        self._root = root
        self._max_bytes = max_bytes
        self._keep_recent_s = keep_recent_s
        # Folders 0700, files 0600 (mkstemp's): the copies are users' LoRAs and face templates.
        make_private_dirs(root / _TEMP_DIR)

    @property
    def root(self) -> Path:
        return self._root

    def entry(self, key: str, version: str) -> Path:
        """Where the copy of ``key`` at ``version`` lives (whether or not it is there yet)."""
        key_dir = hashlib.sha256(key.encode()).hexdigest()[:32]
        version_dir = hashlib.sha256(version.encode()).hexdigest()[:16]
        return self._root / key_dir / version_dir / key.rsplit("/", 1)[-1]

    def lookup(self, key: str, version: str) -> Path | None:
        """The cached copy of ``key`` at ``version``, marked as just used; None if absent."""
        path = self.entry(key, version)
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        return path

    def store(self, key: str, version: str, write: Callable[[BinaryIO], object]) -> Path:
        """Fill the entry of ``key`` at ``version`` with what ``write`` writes, atomically; return it.

        Older versions of the same key are removed, then the cache is trimmed to its bound.
        """
        target = self.entry(key, version)
        write_atomically(target, write, temp_dir=self._root / _TEMP_DIR, temp_prefix="fill-")
        self._drop_other_versions(target)
        self.trim(keep=target)
        return target

    def size(self) -> int:
        """Bytes held by complete entries."""
        return sum(size for _, size, _ in self._entries())

    def trim(self, keep: Path | None = None) -> int:
        """Remove least recently used entries until the cache fits its bound; returns bytes freed."""
        entries = sorted(self._entries(), key=lambda e: e[2])  # oldest use first
        total = sum(size for _, size, _ in entries)
        freed = 0
        now = time.time()
        for path, size, used in entries:
            if total - freed <= self._max_bytes:
                break
            if path == keep or now - used < self._keep_recent_s:
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                freed += size
            remove_empty_folders(path.parent, self._root)
        return freed

    def _entries(self) -> Iterable[tuple[Path, int, float]]:
        """(path, size, last use) of every complete entry; files of fills in progress are skipped."""
        for key_dir in _subdirs(self._root):
            if key_dir.name == _TEMP_DIR:
                continue
            for version_dir in _subdirs(key_dir):
                for path in version_dir.iterdir():
                    with contextlib.suppress(FileNotFoundError):
                        stat = path.stat()
                        yield path, stat.st_size, stat.st_mtime

    def _drop_other_versions(self, current: Path) -> None:
        for version_dir in _subdirs(current.parent.parent):
            if version_dir != current.parent:
                shutil.rmtree(version_dir, ignore_errors=True)


def _subdirs(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()]
    except FileNotFoundError:
        return []
