"""Private files and folders: what the service writes is readable by its own user only.

Files are 0600 and folders 0700 whatever the process's umask: a mode given to ``mkdir`` or
``open`` is masked by the umask (and ``Path.mkdir(parents=True)`` ignores it for the parents), so
every folder and file made here gets an explicit ``chmod`` after it is created. Existing paths are
tightened only where the service owns them; where it cannot, a warning says so.

Standard library only: the blob store, the database and the GPU worker all use it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("facechain.files")

#: Mode of every file the service writes (database, blobs, models, LoRAs).
FILE_MODE = 0o600
#: Mode of every folder the service makes (data dir, blob folders, model folders).
DIR_MODE = 0o700


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents as 0700 folders (existing ones are left as they are)."""
    if path.is_dir():
        return
    missing: list[Path] = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # another process made it in the meantime
        os.chmod(folder, DIR_MODE)
    if not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(path))


def write_atomically(
    target: Path, write: Callable[[BinaryIO], object], *, temp_dir: Path, temp_prefix: str, mode: int = FILE_MODE
) -> None:
    """Fill ``target`` with what ``write`` writes: readers see the old file or the whole new one, never a part.

    The bytes go to a temporary file in ``temp_dir`` (on the same filesystem), reach the disk, and the
    file is renamed into place; if anything fails, the temporary file is removed and ``target`` is as
    it was. The rename is made durable too (the folder's entry is synced).
    """
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix, suffix=".part", dir=temp_dir)
    try:
        with os.fdopen(fd, "wb") as tmp:
            write(tmp)
            tmp.flush()
            os.fchmod(tmp.fileno(), mode)
            os.fsync(tmp.fileno())
        make_private_dirs(target.parent)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def remove_empty_folders(folder: Path, root: Path) -> None:
    """Remove ``folder`` and then each parent while it is empty, up to (not including) ``root``."""
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (or gone, or not ours): the folders above are in use too
        folder = folder.parent


def create_private_file(path: Path) -> None:
    """Create an empty 0600 file at ``path`` unless one exists; an existing one is tightened."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    except FileExistsError:
        restrict(path)
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def restrict(path: Path) -> bool:
    """Tighten an existing file to 0600 or folder to 0700; False (and a warning) where it can't.

    A missing path is fine (True). Symlinks are left alone: their target is not the service's to change.
    """
    try:
        info = path.lstat()
    except FileNotFoundError:
        return True
    if stat.S_ISLNK(info.st_mode):
        return True
    wanted = DIR_MODE if stat.S_ISDIR(info.st_mode) else FILE_MODE
    if stat.S_IMODE(info.st_mode) == wanted:
        return True
    try:
        os.chmod(path, wanted)
    except OSError as exc:
        log.warning("%s is mode %o and cannot be made %o (%s): others on this machine may read it",
                    path, stat.S_IMODE(info.st_mode), wanted, exc)  # fmt: skip
        return False
    return True


def restrict_tree(root: Path) -> None:
    """Every folder under ``root`` (itself included) 0700 and every file 0600; links are not followed."""
    restrict(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            restrict(Path(dirpath) / name)
