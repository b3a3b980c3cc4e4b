"""The command menus Telegram shows, built from the core's own command list (its words, not ours)."""

from __future__ import annotations

import logging
import re

from telegram import Bot, BotCommand, BotCommandScopeAllChatAdministrators, BotCommandScopeDefault
from telegram.error import TelegramError

from bot.core import texts
from bot.telegram_adapter.retry import with_retries

log = logging.getLogger("facechain.telegram")

#: "/generate [style] [count] - make portraits" → ("generate", "make portraits").
_LINE = re.compile(r"^/(?P<name>[a-z0-9_]{1,32})(?:\s+[^-]*?)?\s+-\s+(?P<description>.+)$")


def parse_menu(help_text: str) -> list[BotCommand]:
    """The commands listed in a help text, in its order (lines that list no command are skipped)."""
    commands: list[BotCommand] = []
    for line in help_text.splitlines():
        match = _LINE.match(line.strip())
        if match is not None:
            commands.append(BotCommand(match["name"], match["description"][:256]))
    return commands


def default_menu() -> list[BotCommand]:
    """Everyone's menu: the core's command list."""
    return parse_menu(texts.help_text(admin_here=False))


def admin_menu() -> list[BotCommand]:
    """Group administrators' menu: everyone's commands plus /admin."""
    return parse_menu(texts.help_text(admin_here=True))


async def register_commands(bot: Bot) -> None:
    """setMyCommands for the default scope and for all chat administrators. A failure only logs."""
    try:
        await with_retries(lambda: bot.set_my_commands(default_menu(), scope=BotCommandScopeDefault()), "setMyCommands")
        await with_retries(
            lambda: bot.set_my_commands(admin_menu(), scope=BotCommandScopeAllChatAdministrators()), "setMyCommands"
        )
    except TelegramError as exc:
        log.warning("registering the command menus failed (%s); the commands still work", type(exc).__name__)
