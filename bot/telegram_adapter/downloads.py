"""Fetching the files users send: getFile, then the file itself, with the cloud Bot API's size limit."""

from __future__ import annotations

import logging

from telegram import Bot
from telegram.error import BadRequest, TelegramError

from bot.core.events import BotRejectReason, OfferedFile
from bot.service import Downloader, DownloadError
from bot.telegram_adapter.retry import with_retries

log = logging.getLogger("facechain.telegram")

#: getFile on Telegram's cloud Bot API serves files up to 20 MB; a self-hosted server in --local mode has no limit.
CLOUD_DOWNLOAD_LIMIT = 20 * 1024 * 1024
CLOUD_API_HOST = "api.telegram.org"


def make_downloader(bot: Bot, limit: int | None = CLOUD_DOWNLOAD_LIMIT) -> Downloader:
    """A ``download(offered)`` for the service: bytes, or DownloadError("too_large" | "download_failed")."""

    async def download(offered: OfferedFile) -> bytes:
        if limit is not None and offered.size is not None and offered.size > limit:
            # The server would refuse getFile anyway: save the round trip and say why.
            raise DownloadError(BotRejectReason.TOO_LARGE.value, limit=limit)
        try:
            file = await with_retries(lambda: bot.get_file(offered.ref), "getFile")
            data = await with_retries(file.download_as_bytearray, "file download")
        except BadRequest as exc:
            if "too big" in exc.message.lower():
                # Only a server with the cloud's limit says so (one in --local mode has none).
                raise DownloadError(BotRejectReason.TOO_LARGE.value, limit=CLOUD_DOWNLOAD_LIMIT) from None
            log.info("getFile refused a file: %s", exc.message)
            raise DownloadError(BotRejectReason.DOWNLOAD_FAILED.value) from None
        except TelegramError as exc:
            log.warning("downloading a file failed: %s", type(exc).__name__)
            raise DownloadError(BotRejectReason.DOWNLOAD_FAILED.value) from None
        if limit is not None and len(data) > limit:
            raise DownloadError(BotRejectReason.TOO_LARGE.value, limit=limit)
        return bytes(data)

    return download
