"""Builds the PTB Application from the settings and runs it (long polling, or a webhook) until cancelled.

Wiring: PTB → :class:`ChatLanes` (order per chat, albums) → :class:`UpdateRouter` (update → event →
service → replies) → :class:`TelegramSender`. Results and progress from the workers reach the chat
through :class:`TelegramNotifier`, registered with the service at startup.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from telegram import Update
from telegram.error import InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application, ApplicationBuilder, ContextTypes, TypeHandler

from bot.chat_progress import EDIT_INTERVAL_S
from bot.config import BotSettings
from bot.errors import OperatorError, redacted_url
from bot.logging_setup import register_secret, reveal
from bot.service import ConversationService
from bot.telegram_adapter.commands import register_commands
from bot.telegram_adapter.downloads import CLOUD_API_HOST, CLOUD_DOWNLOAD_LIMIT, make_downloader
from bot.telegram_adapter.handlers import UpdateRouter
from bot.telegram_adapter.lanes import ALBUM_WAIT_S, ChatLanes
from bot.telegram_adapter.request import AiohttpRequest
from bot.telegram_adapter.retry import retry_after_seconds
from bot.telegram_adapter.sender import TelegramNotifier, TelegramSender
from storage.blobs import BlobStore
from storage.models import Platform

log = logging.getLogger("facechain.telegram")

TelegramApp = Application[Any, Any, Any, Any, Any, Any]

ALLOWED_UPDATES = (Update.MESSAGE, Update.CALLBACK_QUERY)
#: Long-polling timeout: how long one getUpdates waits on the server for something to happen.
POLL_TIMEOUT_S = 10
#: Connections the bot's own Bot API calls may hold at once (PTB's default); getUpdates gets one of its own.
CONNECTION_POOL_SIZE = 256


class TelegramStartupError(OperatorError):
    """Telegram refused the bot at startup (a wrong token); says so without showing the token."""


@dataclass(frozen=True, slots=True)
class AdapterOptions:
    """Tuning knobs (tests shorten them); the defaults respect Telegram's limits."""

    album_wait: float = ALBUM_WAIT_S
    edit_interval: float = EDIT_INTERVAL_S
    poll_timeout: int = POLL_TIMEOUT_S


def api_root(settings: BotSettings) -> str:
    """The Bot API server as log lines name it: the configured root, without any credentials. The
    token (``{root}/bot<token>/…``) is never part of it."""
    return redacted_url(str(settings.telegram_api_url).rstrip("/"))


def is_cloud_api(settings: BotSettings) -> bool:
    return (urlsplit(str(settings.telegram_api_url)).hostname or "") == CLOUD_API_HOST


def build_application(settings: BotSettings) -> TelegramApp:
    """The PTB Application for the configured Bot API server (no handlers yet)."""
    if settings.telegram_token is None:
        raise TelegramStartupError("FACECHAIN_TELEGRAM_TOKEN is not set")
    root = str(settings.telegram_api_url).rstrip("/")
    application: TelegramApp = (
        ApplicationBuilder()
        # Registered with the log redaction first: PTB logs its URLs (and proxies echo them in errors).
        .token(reveal(settings.telegram_token))
        .base_url(f"{root}/bot")
        .base_file_url(f"{root}/file/bot")
        .request(AiohttpRequest(connection_pool_size=CONNECTION_POOL_SIZE))
        .get_updates_request(AiohttpRequest(connection_pool_size=1))
        .job_queue(None)
        .build()
    )
    return application


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::]:8443`` for IPv6) → (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"FACECHAIN_TELEGRAM_WEBHOOK_LISTEN must be host:port, not {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class TelegramAdapter:
    """The Telegram side of the bot process: one PTB Application, its lanes, sender and notifier."""

    def __init__(
        self,
        settings: BotSettings,
        service: ConversationService,
        blobs: BlobStore,
        options: AdapterOptions | None = None,
    ) -> None:
        self._settings = settings
        self._service = service
        self._options = options or AdapterOptions()
        self.application = build_application(settings)
        bot = self.application.bot
        self.sender = TelegramSender(bot, blobs, edit_interval=self._options.edit_interval)
        limit = CLOUD_DOWNLOAD_LIMIT if is_cloud_api(settings) else None
        self.router = UpdateRouter(bot, service, self.sender, make_downloader(bot, limit))
        self.lanes = ChatLanes(self.router.handle, self.router.handle_album, album_wait=self._options.album_wait)
        self.application.add_handler(TypeHandler(Update, self._on_update))
        self.application.add_error_handler(self._on_error)

    async def run(self) -> None:
        """Start, serve updates until cancelled, then stop cleanly (finishing what the lanes hold)."""
        app = self.application
        try:
            await self._initialize()
        except BaseException:
            # app.shutdown() does nothing before initialize() succeeded: close the HTTP sessions here.
            await app.bot.shutdown()
            raise
        try:
            await register_commands(app.bot)
            self._service.register_notifier(Platform.TELEGRAM, TelegramNotifier(self.sender))
            await app.start()
            try:
                await self._start_updates()
                log.info("telegram: serving as @%s", app.bot.username)
                await asyncio.Event().wait()
            finally:
                with contextlib.suppress(Exception):
                    if app.updater is not None and app.updater.running:
                        await app.updater.stop()
                # PTB hands the updates it already fetched to the lanes; then the lanes finish them.
                await app.stop()
                await self.lanes.aclose()
                await self.sender.aclose()
        finally:
            await app.shutdown()

    async def _initialize(self) -> None:
        """initialize() calls getMe: retry while the Bot API is unreachable, fail at once on a bad token."""
        delay = 1.0
        while True:
            try:
                await self.application.initialize()
                return
            except InvalidToken:
                raise TelegramStartupError(
                    "Telegram rejected FACECHAIN_TELEGRAM_TOKEN: check the token from @BotFather "
                    "(and FACECHAIN_TELEGRAM_API_URL if you run your own Bot API server)"
                ) from None
            except RetryAfter as exc:
                await asyncio.sleep(retry_after_seconds(exc))
            except NetworkError as exc:
                log.warning(
                    "telegram: the Bot API at %s is not reachable (%s); retrying in %.0f s",
                    api_root(self._settings), exc.message, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _start_updates(self) -> None:
        updater = self.application.updater
        assert updater is not None
        webhook = self._settings.telegram_webhook_url
        if webhook is None:
            await updater.start_polling(
                timeout=self._options.poll_timeout,
                allowed_updates=list(ALLOWED_UPDATES),
                drop_pending_updates=False,
                bootstrap_retries=-1,
                error_callback=functools.partial(_polling_error, api_root(self._settings)),
            )
            return
        host, port = parse_listen(self._settings.telegram_webhook_listen)
        secret = self._settings.telegram_webhook_secret
        # Without a configured secret a fresh one is made: Telegram sends it back with every update.
        token = secret.get_secret_value() if secret is not None else secrets.token_urlsafe(32)
        register_secret(token)  # configured or made here: kept out of the logs either way
        try:
            await updater.start_webhook(
                listen=host,
                port=port,
                url_path=urlsplit(str(webhook)).path.lstrip("/"),
                webhook_url=str(webhook),
                secret_token=token,
                allowed_updates=list(ALLOWED_UPDATES),
                drop_pending_updates=False,
                bootstrap_retries=-1,
            )
        except OSError as exc:
            raise OperatorError(
                f"cannot listen for webhooks on {host}:{port} ({exc.strerror or exc}): free that port or set "
                "FACECHAIN_TELEGRAM_WEBHOOK_LISTEN to another"
            ) from None

    async def _on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        self.lanes.submit(update)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("telegram: an update failed: %s", type(context.error).__name__, exc_info=context.error)


def _polling_error(root: str, exc: TelegramError) -> None:
    # PTB retries getUpdates itself; the update is confirmed only by a later call, so nothing is lost.
    log.warning("telegram: polling %s failed (%s: %s); retrying", root, type(exc).__name__, exc.message)


async def run_telegram(settings: BotSettings, service: ConversationService, blobs: BlobStore) -> None:
    """The adapter entry point :mod:`bot.app` runs: serve Telegram until cancelled."""
    await TelegramAdapter(settings, service, blobs).run()
