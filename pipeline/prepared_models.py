"""A prepared copy of the base model on the models volume, so that a restarted worker loads fast.

Loading the base model the first time means reading it as shipped (often fp32, or an original
single-file checkpoint that diffusers converts key by key) and casting it to the inference dtype:
7 s of a worker's start on an H200 for SD 1.5. The worker then writes the converted pipeline once,
as diffusers' own folder of safetensors in that dtype, under ``<models_dir>/.prepared/<key>``; a
later start (the same base model, dtype and diffusers version: that is the key) reads that instead.

The copy is written to a temporary folder and renamed into place, so a crash or a second worker
starting at the same time never leaves a half-written copy where a reader would find it; a copy
that fails to load is ignored and written again. ``FACECHAIN_PREPARED_MODEL_CACHE=false`` turns it
off (it costs about 2 GB of disk for SD 1.5 in fp16).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.files import make_private_dirs, restrict_tree

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionPipeline

log = logging.getLogger(__name__)

#: Bumped when what is written changes, so that older copies are not read.
FORMAT = 1
#: Prepared copies kept (the newest); older ones are deleted after a new one is written.
KEEP = 2
_DONE = "prepared.json"


def _fingerprint(path: Path) -> list[tuple[str, int, int]]:
    """(relative name, size, mtime) of a file, or of every file under a folder."""
    if path.is_file():
        stat = path.stat()
        return [(path.name, stat.st_size, stat.st_mtime_ns)]
    found = []
    for file in sorted(p for p in path.rglob("*") if p.is_file() and ".prepared" not in p.parts):
        stat = file.stat()
        found.append((str(file.relative_to(path)), stat.st_size, stat.st_mtime_ns))
    return found


def prepared_dir(models_dir: Path, source: Path, dtype: torch.dtype, config: Path | None = None) -> Path:
    """Where the prepared copy of ``source`` (with a single file's ``config`` folder) in ``dtype`` lives."""
    import diffusers

    identity = {
        "format": FORMAT,
        "source": str(source.resolve()),
        "files": _fingerprint(source),
        "config": _fingerprint(config) if config is not None else None,
        "dtype": str(dtype),
        "diffusers": diffusers.__version__,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
    return models_dir / ".prepared" / digest


def load_prepared(folder: Path, options: dict[str, Any]) -> StableDiffusionPipeline | None:
    """The prepared pipeline in ``folder``, or None when there is none (or it cannot be read)."""
    from diffusers import StableDiffusionPipeline

    if not (folder / _DONE).is_file():
        return None
    try:
        pipe = StableDiffusionPipeline.from_pretrained(folder, **options)
    except Exception:
        log.warning("the prepared model copy in %s cannot be read; loading the original", folder, exc_info=True)
        shutil.rmtree(folder, ignore_errors=True)  # written again from the original
        return None
    log.info("base model read from its prepared copy %s", folder)
    return pipe


def save_prepared(pipe: StableDiffusionPipeline, folder: Path, source: Path) -> bool:
    """Write ``pipe`` (still on the CPU) to ``folder`` atomically; False when it could not be written.

    A full disk or a read-only volume costs the next start its speed, never this one its model.
    """
    started = time.perf_counter()
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    try:
        shutil.rmtree(partial, ignore_errors=True)
        make_private_dirs(partial.parent)
        pipe.save_pretrained(partial, safe_serialization=True)
        (partial / _DONE).write_text(json.dumps({"source": str(source), "format": FORMAT}))
        restrict_tree(partial)  # 0700 folders, 0600 files, like everything the service writes
        try:
            partial.rename(folder)
        except OSError:
            if not (folder / _DONE).is_file():
                raise
            shutil.rmtree(partial, ignore_errors=True)  # another worker finished the same copy first
    except Exception:
        log.warning("could not write a prepared copy of the base model to %s", folder, exc_info=True)
        shutil.rmtree(partial, ignore_errors=True)
        return False
    _prune(folder.parent, keep=folder)
    log.info("prepared copy of the base model written to %s in %.1fs", folder, time.perf_counter() - started)
    return True


def _prune(root: Path, keep: Path) -> None:
    """Delete all but the newest :data:`KEEP` complete copies (never ``keep``), and stale partials."""
    copies = sorted(
        (p for p in root.iterdir() if p.is_dir() and (p / _DONE).is_file()),
        key=lambda p: (p / _DONE).stat().st_mtime,
        reverse=True,
    )
    for old in copies[KEEP:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
    day_ago = time.time() - 86400
    for partial in root.glob("*.partial-*"):
        if partial.stat().st_mtime < day_ago:
            shutil.rmtree(partial, ignore_errors=True)
