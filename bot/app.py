"""The composition root of the bot process: builds storage, the queue, the conversation service and
the chat adapters whose tokens are set, and runs them together until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis

from bot.config import BotSettings
from bot.queue import ArqJobQueue, build_outcome_worker, create_redis, listen_progress, run_outcome_worker
from bot.service import ConversationService
from bot.styles import load_catalog
from storage.blobs import BlobStore
from storage.db import open_database
from storage.repositories import Repositories

log = logging.getLogger("facechain.bot")

#: An adapter entry point: runs until cancelled.
AdapterRunner = Callable[[BotSettings, ConversationService], Coroutine[Any, Any, None]]


class NoPlatformConfigured(SystemExit):
    """Neither a Telegram nor a Discord token is set."""


@dataclass
class BotRuntime:
    """What the bot process holds while it runs (tests use it to drive the service directly)."""

    settings: BotSettings
    repos: Repositories
    blobs: BlobStore
    redis: ArqRedis
    queue: ArqJobQueue
    service: ConversationService


@contextlib.asynccontextmanager
async def bot_runtime(settings: BotSettings) -> AsyncIterator[BotRuntime]:
    """Open the database (migrating it), the blob store and Redis; build the service."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = await open_database(settings.database_path)
    redis = await create_redis(str(settings.redis_url))
    try:
        repos = Repositories(db)
        blobs = BlobStore(settings.blob_dir)
        # Finish any /forget that a crash interrupted before its files were gone.
        await repos.purge_blob_deletions(blobs)
        queue = ArqJobQueue(redis)
        service = ConversationService(
            repos, blobs, queue, load_catalog(settings.styles_dir), settings.limits(),
            candidates=settings.candidates,
        )  # fmt: skip
        yield BotRuntime(settings, repos, blobs, redis, queue, service)
    finally:
        await redis.aclose()
        await db.close()


def configured_adapters(settings: BotSettings) -> dict[str, AdapterRunner]:
    """The adapters whose tokens are set. Imported lazily: a Telegram-only install lacks discord.py."""
    wanted = {
        "telegram": ("bot.telegram_adapter", "run_telegram", settings.telegram_token),
        "discord": ("bot.discord_adapter", "run_discord", settings.discord_token),
    }
    adapters: dict[str, AdapterRunner] = {}
    for name, (module_name, entry, token) in wanted.items():
        if token is None:
            continue
        try:
            runner: AdapterRunner = getattr(importlib.import_module(module_name), entry)
        except (ImportError, AttributeError) as exc:
            raise NoPlatformConfigured(
                f"facechain-bot: FACECHAIN_{name.upper()}_TOKEN is set but the {name} adapter cannot be "
                f"loaded ({exc}); install the extra: pip install 'facechain-bot[{name}]'"
            ) from None
        adapters[name] = runner
    return adapters


def loop_factory(settings: BotSettings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when ``FACECHAIN_UVLOOP`` is on and uvloop is installed (not on Windows); else
    None: asyncio's default loop. The bot's one event-loop thread is its limit under load."""
    if not settings.uvloop or sys.platform == "win32":
        return None
    try:
        import uvloop
    except ImportError:
        log.info("FACECHAIN_UVLOOP is on but uvloop is not installed: running on asyncio's own loop")
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(settings: BotSettings) -> None:
    """Run the bot process until stopped, on the event loop the settings choose (``loop_factory``)."""
    with asyncio.Runner(loop_factory=loop_factory(settings)) as runner:
        runner.run(run_bot(settings))


async def run_bot(settings: BotSettings) -> None:
    """Run the bot process: outcome consumer, progress listener and every configured adapter."""
    adapters = configured_adapters(settings)
    if not adapters:
        raise NoPlatformConfigured(
            "facechain-bot: no chat platform configured: set FACECHAIN_TELEGRAM_TOKEN and/or "
            "FACECHAIN_DISCORD_TOKEN (see .env.example)"
        )
    async with bot_runtime(settings) as runtime:
        outcome_worker = build_outcome_worker(str(settings.redis_url), runtime.service.on_outcome)
        tasks = [
            asyncio.create_task(run_outcome_worker(outcome_worker), name="outcomes"),
            asyncio.create_task(listen_progress(runtime.redis, runtime.service.on_progress), name="progress"),
        ]
        tasks += [
            asyncio.create_task(runner(settings, runtime.service), name=name) for name, runner in adapters.items()
        ]
        loop = asyncio.get_running_loop()
        log.info("bot running: %s (event loop: %s)", ", ".join(adapters), type(loop).__module__)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
