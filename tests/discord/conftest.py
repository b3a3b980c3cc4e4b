"""Fixtures of the Discord adapter tests: the fake Discord, and the bot behind it with a scripted GPU worker
(the real stages are in test_journey.py, which alone loads them)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bot_loop import bot_loop_factories
from tests.discord.fake_discord import FakeDiscord
from tests.discord.harness import Stack, bot_settings, scripted_stack


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    return bot_loop_factories()


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def scripted(fake: FakeDiscord, tmp_path: Path, redis_url: str) -> AsyncIterator[Stack]:
    """The bot and a GPU worker whose stages are scripted (fast; for tests about the chat side)."""
    async with scripted_stack(fake, bot_settings(fake, tmp_path, redis_url)) as stack:
        yield stack


@pytest.fixture
def fake_in_thread() -> Iterator[FakeDiscord]:
    """The fake Discord on a loop of its own, so the CLI can run its own ``asyncio.run``."""
    loop = asyncio.new_event_loop()
    fake = FakeDiscord()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
