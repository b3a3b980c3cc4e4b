"""The composition root (bot/app.py) builds every resource; the adapters only receive them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: What the composition root calls to build the bot process's resources: the database, its repositories,
#: the blob store, Redis, the queue and the service.
RESOURCES = {"open_blob_store", "open_database", "Repositories", "create_redis", "ArqJobQueue", "ConversationService"}
#: Further ways to build a resource that no adapter may use either.
CONSTRUCTORS = RESOURCES | {"LocalBlobStore", "S3BlobStore", "BlobStore"}


def constructed(package: Path) -> list[str]:
    """``file:line name`` of every call of a resource constructor in the package."""
    found = []
    for path in sorted(package.rglob("*.py")) if package.is_dir() else [package]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in CONSTRUCTORS:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return found


@pytest.mark.parametrize("adapter", ["telegram_adapter", "discord_adapter"])
def test_adapters_construct_no_resource(adapter: str) -> None:
    assert constructed(ROOT / "bot" / adapter) == []


def test_the_root_constructs_them() -> None:
    built = {entry.rsplit(" ", 1)[1] for entry in constructed(ROOT / "bot" / "app.py")}
    assert built == RESOURCES
