"""Fixtures shared by every test package: a real Redis database, emptied around each test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
from redis.asyncio import Redis

#: A database number of its own, so tests never touch data in the default database 0.
TEST_REDIS_URL = os.environ.get("FACECHAIN_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
#: Script mode on the tiny SD model, as settings without their ``FACECHAIN_`` prefix: CPU, fp32, 64 px,
#: two training and two inference steps, two candidates and no face ranking.
TINY_SCRIPT_SETTINGS = {
    "DEVICE": "cpu", "DTYPE": "fp32", "RESOLUTION": "64", "MAX_TRAIN_STEPS": "2", "INFERENCE_STEPS": "2",
    "RANK_FACES": "false", "CANDIDATES": "2",
}  # fmt: skip


def set_settings(monkeypatch: pytest.MonkeyPatch, settings: Mapping[str, str]) -> None:
    """Each ``NAME: value`` of ``settings`` into the environment as ``FACECHAIN_NAME``."""
    for name, value in settings.items():
        monkeypatch.setenv(f"FACECHAIN_{name}", value)


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """The URL of a real, empty Redis database (flushed before and after the test)."""
    client = Redis.from_url(TEST_REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:  # pragma: no cover - the environment is broken, say so clearly
        pytest.fail(f"no Redis at {TEST_REDIS_URL}: {exc} (scripts/test starts one)")
    await client.flushdb()
    try:
        yield TEST_REDIS_URL
    finally:
        await client.flushdb()
        await client.aclose()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str) -> Path:
    """A clean environment for running the real CLI: no FACECHAIN_* from outside, data and models in
    ``tmp_path`` (also the working directory, so no stray .env is read), the test Redis."""
    for name in [n for n in os.environ if n.startswith("FACECHAIN_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACECHAIN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FACECHAIN_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("FACECHAIN_REDIS_URL", redis_url)
    return tmp_path
