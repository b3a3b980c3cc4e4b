"""The command menus Telegram shows, rendered from the core's command catalogue."""

from __future__ import annotations

import logging

from telegram import Bot, BotCommand, BotCommandScopeAllChatAdministrators, BotCommandScopeDefault
from telegram.error import TelegramError

from bot.core import catalogue
from bot.telegram_adapter.retry import with_retries

log = logging.getLogger("facechain.telegram")


def default_menu() -> list[BotCommand]:
    """Everyone's menu: the catalogue's listed commands, in its order."""
    return [_entry(c) for c in catalogue.listed()]


def admin_menu() -> list[BotCommand]:
    """Group administrators' menu: everyone's commands plus /admin."""
    return [*default_menu(), _entry(catalogue.ADMIN)]


def _entry(command: catalogue.CommandSpec) -> BotCommand:
    return BotCommand(command.name, command.help)


async def register_commands(bot: Bot) -> None:
    """setMyCommands for the default scope and for all chat administrators. A failure only logs."""
    try:
        await with_retries(lambda: bot.set_my_commands(default_menu(), scope=BotCommandScopeDefault()), "setMyCommands")
        await with_retries(
            lambda: bot.set_my_commands(admin_menu(), scope=BotCommandScopeAllChatAdministrators()), "setMyCommands"
        )
    except TelegramError as exc:
        log.warning("registering the command menus failed (%s); the commands still work", type(exc).__name__)
