"""Fixtures shared by every test package: a real Redis database, emptied around each test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

#: A database number of its own, so tests never touch data in the default database 0.
TEST_REDIS_URL = os.environ.get("FACECHAIN_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")


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
