"""A local HTTP server in the ModelScope hub's layout, for `models fetch` tests (the outermost edge).

Serves ``root/<owner>/<name>/<revision>/<path>`` as the hub does:

- ``GET /api/v1/models/<owner>/<name>/repo/files?Revision=R&Recursive=True`` → the file list;
- ``GET /api/v1/models/<owner>/<name>/repo?Revision=R&FilePath=P`` → the bytes, honouring ``Range``.

``break_after`` makes the next download of a file stop after that many bytes (a dropped connection).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse


@dataclass
class HubState:
    root: Path
    #: (path, Range header or None) of every file download served.
    downloads: list[tuple[str, str | None]] = field(default_factory=list)
    listings: list[str] = field(default_factory=list)
    #: FilePath → bytes after which the next download of it is cut off.
    break_after: dict[str, int] = field(default_factory=dict)

    def add(self, repo: str, revision: str, files: dict[str, bytes]) -> None:
        for path, data in files.items():
            target = self.root / repo / revision / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


def _handler(state: HubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            parts = url.path.strip("/").split("/")
            if len(parts) < 6 or parts[:3] != ["api", "v1", "models"]:
                self.send_error(404)
                return
            repo = f"{parts[3]}/{parts[4]}"
            folder = state.root / repo / query.get("Revision", "master")
            if parts[5:] == ["repo", "files"]:
                self._list(repo, folder)
            elif parts[5:] == ["repo"] and "FilePath" in query:
                self._file(folder, query["FilePath"])
            else:
                self.send_error(404)

        def _list(self, repo: str, folder: Path) -> None:
            state.listings.append(repo)
            if not folder.is_dir():
                self._json(404, {"Code": 10010205001, "Message": f"repo {repo} not found"})
                return
            files = []
            for path in sorted(folder.rglob("*")):
                relative = path.relative_to(folder).as_posix()
                if path.is_dir():
                    files.append({"Name": path.name, "Path": relative, "Type": "tree"})
                else:
                    data = path.read_bytes()
                    files.append(
                        {
                            "Name": path.name,
                            "Path": relative,
                            "Type": "blob",
                            "Size": len(data),
                            "Sha256": hashlib.sha256(data).hexdigest(),
                        }
                    )
            self._json(200, {"Code": 200, "Data": {"Files": files}, "Success": True})

        def _file(self, folder: Path, path: str) -> None:
            target = folder / path
            if not target.is_file():
                self.send_error(404)
                return
            data = target.read_bytes()
            header = self.headers.get("Range")
            state.downloads.append((path, header))
            start = 0
            if header and header.startswith("bytes="):
                start = int(header[6:].split("-", 1)[0])
            if start >= len(data) and data:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            body = data[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = state.break_after.pop(path, None)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

        def _json(self, status: int, payload: object) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextmanager
def serve_hub(root: Path) -> Iterator[tuple[str, HubState]]:
    """Run the hub on 127.0.0.1 (a free port) in a thread; yields its endpoint and state."""
    state = HubState(root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
