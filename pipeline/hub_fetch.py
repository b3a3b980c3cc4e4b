"""Downloading ModelScope repositories file by file, with progress and resume (standard library only).

The same HTTP API ModelScope's own ``snapshot_download`` uses (modelscope-hub's legacy client):

- list:  ``GET {endpoint}/api/v1/models/{owner}/{name}/repo/files?Revision={rev}&Recursive=True``
  → ``{"Code": 200, "Data": {"Files": [{"Path", "Type": "blob"|"tree", "Size", "Sha256"}, ...]}}``
- file:  ``GET {endpoint}/api/v1/models/{owner}/{name}/repo?Revision={rev}&FilePath={path}``
  (honours ``Range: bytes=N-``).

A file is written to ``<name>.part`` and renamed into place once its size (and SHA-256, when the
listing gives one) match; an interrupted fetch resumes the ``.part`` file with a range request. The
repo folder's :data:`pipeline.stage_models.FETCH_MANIFEST` records each completed file with its
revision and size, so a second fetch downloads nothing. The endpoint is a setting
(``FACECHAIN_MODELSCOPE_ENDPOINT``): tests point it at a local server that serves this layout.
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.stage_models import FETCH_MANIFEST, fetch_manifest

CHUNK = 1 << 20
TIMEOUT_S = 60.0

#: ``progress(path, bytes_done, bytes_total)`` after each chunk (total may be None).
Progress = Callable[[str, int, "int | None"], None]


class HubError(RuntimeError):
    """The hub refused or broke a request; the message names the repo, the file and the reason."""


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class FetchRequest:
    """One repository at one revision, and which of its files to take."""

    repo: str
    revision: str
    target: Path
    #: Exact file paths to take (None: every file ``accept`` lets through).
    files: tuple[str, ...] | None = None
    accept: Callable[[str], bool] | None = None


@dataclass(frozen=True)
class PlannedFile:
    request: FetchRequest
    remote: RemoteFile

    @property
    def destination(self) -> Path:
        return self.request.target / self.remote.path

    def is_done(self) -> bool:
        """Already fetched at this revision (the manifest says so and the size still matches)."""
        entry = fetch_manifest(self.request.target).get(self.remote.path)
        if not entry or entry.get("revision") != self.request.revision or not self.destination.is_file():
            return False
        return self.remote.size is None or self.destination.stat().st_size == self.remote.size


class ModelScopeHub:
    """A ModelScope hub at ``endpoint`` (``https://www.modelscope.cn`` or a mirror of its layout)."""

    def __init__(self, endpoint: str, *, timeout: float = TIMEOUT_S, token: str | None = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self._headers = {"User-Agent": "facechain-bot (models fetch)"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def files_url(self, repo: str, revision: str) -> str:
        query = urllib.parse.urlencode({"Revision": revision, "Recursive": "True"})
        return f"{self.endpoint}/api/v1/models/{repo}/repo/files?{query}"

    def file_url(self, repo: str, revision: str, path: str) -> str:
        query = urllib.parse.urlencode({"Revision": revision, "FilePath": path})
        return f"{self.endpoint}/api/v1/models/{repo}/repo?{query}"

    def list_files(self, repo: str, revision: str) -> list[RemoteFile]:
        """Every file (not folder) of ``repo`` at ``revision``."""
        body = self._json(self.files_url(repo, revision), f"{repo}@{revision}")
        data: Any = body.get("Data", body) if isinstance(body, dict) else body
        entries = (data.get("Files") or data.get("files") or []) if isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise HubError(f"{repo}@{revision}: the hub's file list is not a list")
        files = []
        for entry in entries:
            if not isinstance(entry, dict) or (entry.get("Type") or entry.get("type") or "blob") == "tree":
                continue
            path = entry.get("Path") or entry.get("path") or entry.get("Name")
            if not isinstance(path, str) or not _safe_path(path):
                continue
            size = entry.get("Size", entry.get("size"))
            sha = entry.get("Sha256") or entry.get("sha256")
            files.append(
                RemoteFile(path, int(size) if size is not None else None, sha if isinstance(sha, str) else None)
            )
        return files

    def _json(self, url: str, what: str) -> Any:
        request = urllib.request.Request(url, headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise HubError(f"{what}: the hub answered HTTP {exc.code} ({self.endpoint})") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise HubError(f"{what}: cannot reach the hub at {self.endpoint} ({_reason(exc)})") from exc
        except ValueError as exc:
            raise HubError(f"{what}: the hub's answer is not JSON") from exc

    def download(self, planned: PlannedFile, progress: Progress | None = None) -> int:
        """Fetch one file into place (resuming its ``.part``); returns the bytes transferred."""
        request, remote = planned.request, planned.remote
        destination = planned.destination
        destination.parent.mkdir(parents=True, exist_ok=True)
        part = destination.with_name(destination.name + ".part")
        have = part.stat().st_size if part.exists() else 0
        if remote.size is not None and have > remote.size:
            part.unlink()
            have = 0
        url = self.file_url(request.repo, request.revision, remote.path)
        what = f"{request.repo}@{request.revision}: {remote.path}"
        transferred = 0
        if remote.size is None or have < remote.size:
            transferred = self._stream(url, part, have, remote, what, progress)
        _verify(part, remote, what)
        os.replace(part, destination)
        _record(request.target, remote, request.revision)
        return transferred

    def _stream(self, url: str, part: Path, have: int, remote: RemoteFile, what: str, progress: Progress | None) -> int:
        headers = dict(self._headers)
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and remote.size is not None and have == remote.size:
                return 0
            raise HubError(f"{what}: the hub answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise HubError(f"{what}: cannot reach the hub at {self.endpoint} ({_reason(exc)})") from exc
        transferred = 0
        with response:
            resumed = have and response.status == 206 and _range_start(response.headers.get("Content-Range")) == have
            mode = "ab" if resumed else "wb"
            done = have if resumed else 0
            with part.open(mode) as out:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        raise HubError(
                            f"{what}: the download broke off at {done} bytes ({_reason(exc)}); "
                            "run `models fetch` again to resume"
                        ) from exc
                    if not chunk:
                        break
                    out.write(chunk)
                    done += len(chunk)
                    transferred += len(chunk)
                    if progress is not None:
                        progress(remote.path, done, remote.size)
        return transferred


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc)[:200]


def _range_start(value: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``."""
    if not value or not value.startswith("bytes "):
        return None
    start = value[6:].split("-", 1)[0]
    return int(start) if start.isdigit() else None


def _safe_path(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _verify(part: Path, remote: RemoteFile, what: str) -> None:
    size = part.stat().st_size if part.exists() else 0
    if remote.size is not None and size != remote.size:
        raise HubError(f"{what}: got {size} of {remote.size} bytes; run `models fetch` again to resume")
    if remote.sha256:
        digest = hashlib.sha256()
        with part.open("rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                digest.update(block)
        if digest.hexdigest().lower() != remote.sha256.lower():
            part.unlink()
            raise HubError(f"{what}: the SHA-256 does not match the hub's; the partial file was removed, fetch again")


def _record(folder: Path, remote: RemoteFile, revision: str) -> None:
    """Add one completed file to the folder's manifest (written atomically)."""
    manifest = folder / FETCH_MANIFEST
    files = fetch_manifest(folder)
    files[remote.path] = {"revision": revision, "size": remote.size}
    temporary = manifest.with_name(manifest.name + ".tmp")
    temporary.write_text(json.dumps({"files": files}, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(temporary, manifest)


def plan(hub: ModelScopeHub, requests: Iterable[FetchRequest]) -> list[PlannedFile]:
    """Every file the requests take, as listed by the hub (a named file it does not list is an error)."""
    planned: list[PlannedFile] = []
    for request in requests:
        listed = {f.path: f for f in hub.list_files(request.repo, request.revision)}
        if request.files is not None:
            absent = [p for p in request.files if p not in listed]
            if absent:
                raise HubError(f"{request.repo}@{request.revision} has no file {', '.join(absent)}")
            chosen = [listed[p] for p in request.files]
        else:
            accept = request.accept or (lambda path: True)
            chosen = [f for f in listed.values() if accept(f.path)]
        planned += [PlannedFile(request, remote) for remote in chosen]
    return planned


def patterns(allow: list[str] | None, ignore: list[str]) -> Callable[[str], bool]:
    """A file filter from glob patterns, as snapshot_download's allow/ignore patterns work."""

    def accept(path: str) -> bool:
        if allow is not None and not any(fnmatch.fnmatch(path, p) for p in allow):
            return False
        return not any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.rsplit("/", 1)[-1], p) for p in ignore)

    return accept
