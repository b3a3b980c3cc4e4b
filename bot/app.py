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
from bot.errors import OperatorError
from bot.graceful import cancel_all, until_terminated
from bot.metrics import bot_metrics
from bot.queue import ArqJobQueue, create_redis, listen_progress, serve_outcomes
from bot.service import ConversationService
from bot.styles import load_catalog
from bot.supervisor import RunSupervisor, SupervisorSettings
from storage.blob_config import open_blob_store
from storage.blobs import BlobStore
from storage.db import open_database
from storage.files import make_private_dirs, restrict
from storage.repositories import Repositories

log = logging.getLogger("facechain.bot")

#: An adapter entry point: runs until cancelled, with the service and blob store built here.
AdapterRunner = Callable[[BotSettings, ConversationService, BlobStore], Coroutine[Any, Any, None]]


class NoPlatformConfigured(OperatorError):
    """Neither a Telegram nor a Discord token is set, or a configured adapter cannot be imported."""


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
    """Open the database (migrating it), the blob store and Redis; build the service.

    Redis is not waited for: its client connects on first use, so the bot starts, and answers what
    needs no queue, while Redis is down. Whatever was opened is closed again if a later step fails
    (an open database holds a thread that would keep the process alive).
    """
    make_private_dirs(settings.data_dir)
    restrict(settings.data_dir)  # 0700: the database and every photo live under it
    async with contextlib.AsyncExitStack() as stack:
        db = await open_database(settings.database_path)
        stack.push_async_callback(db.close)
        redis = await create_redis(str(settings.redis_url))
        stack.push_async_callback(redis.aclose)
        repos = Repositories(db)
        blobs = open_blob_store(settings, settings.data_dir)
        log.info("blob store: %s", blobs.location)
        # Finish any /forget that a crash interrupted before its files were gone.
        await repos.purge_blob_deletions(blobs)
        queue = ArqJobQueue(redis)
        service = ConversationService(
            repos, blobs, queue, load_catalog(settings.styles_dir, settings.models_dir, blobs), settings.limits(),
            candidates=settings.candidates,
        )  # fmt: skip
        yield BotRuntime(settings, repos, blobs, redis, queue, service)


def background_tasks(runtime: BotRuntime) -> list[asyncio.Task[None]]:
    """The bot process's own loops: the outcome consumer, the progress listener and the run
    supervisor. Each rides out Redis outages by itself; they run until cancelled."""
    settings = runtime.settings
    supervisor = RunSupervisor(
        runtime.service,
        runtime.queue,
        SupervisorSettings(
            interval_s=settings.run_check_interval_s,
            lost_after_s=settings.run_lost_after_s,
            no_worker_after_s=settings.run_no_worker_after_s,
            max_attempts=settings.run_max_attempts,
        ),
    )
    return [
        asyncio.create_task(
            serve_outcomes(str(settings.redis_url), runtime.service.on_outcome, runtime.service.delivery_given_up),
            name="outcomes",
        ),
        asyncio.create_task(listen_progress(runtime.redis, runtime.service.on_progress), name="progress"),
        asyncio.create_task(supervisor.run_forever(), name="supervisor"),
    ]


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
                f"FACECHAIN_{name.upper()}_TOKEN is set but the {name} adapter cannot be "
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
    """Run the bot process until stopped (Ctrl-C or SIGTERM), on the event loop the settings choose."""
    with asyncio.Runner(loop_factory=loop_factory(settings)) as runner:
        runner.run(until_terminated(run_bot(settings)))


async def run_bot(settings: BotSettings) -> None:
    """Run the bot process: outcome consumer, progress listener, run supervisor and every configured adapter."""
    adapters = configured_adapters(settings)
    if not adapters:
        raise NoPlatformConfigured(
            "no chat platform configured: set FACECHAIN_TELEGRAM_TOKEN and/or "
            "FACECHAIN_DISCORD_TOKEN (see .env.example)"
        )
    async with (
        bot_runtime(settings) as runtime,
        bot_metrics(settings.bot_metrics_port, runtime.repos, runtime.redis),
    ):
        tasks = background_tasks(runtime)
        tasks += [
            asyncio.create_task(runner(settings, runtime.service, runtime.blobs), name=name)
            for name, runner in adapters.items()
        ]
        loop = asyncio.get_running_loop()
        log.info("bot running: %s (event loop: %s)", ", ".join(adapters), type(loop).__module__)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            await cancel_all(tasks)
