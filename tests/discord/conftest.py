"""Fixtures of the Discord adapter tests: the fake Discord, and the bot behind it with a scripted GPU worker
(the real stages are in test_journey.py, which alone loads them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.app import loop_factory
from bot.config import BotSettings
from pipeline.config import WorkerSettings
from storage.blobs import BlobStore
from tests.discord.fake_discord import FakeDiscord
from tests.discord.harness import OPTIONS, ScriptedRunner, Stack, bot_settings


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """These tests run on the bot process's own loop (``bot.app.loop_factory``: uvloop when switched on),
    asyncio's with ``FACECHAIN_UVLOOP=false``."""
    factory = loop_factory(BotSettings(_env_file=None))
    return {"uvloop": factory} if factory is not None else {"asyncio": asyncio.new_event_loop}


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
    settings = bot_settings(fake, tmp_path, redis_url)
    worker = WorkerSettings(_env_file=None, data_dir=tmp_path / "data", redis_url=redis_url)  # type: ignore[call-arg]
    stack = Stack(fake, settings, worker, ScriptedRunner(BlobStore(settings.blob_dir)), OPTIONS)
    await stack.start_bot()
    await stack.start_worker()
    try:
        yield stack
    finally:
        await stack.close()
