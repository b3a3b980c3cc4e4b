"""The event loop the bot process runs on, for the test packages that run the bot in-process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bot.app import loop_factory
from bot.config import BotSettings


def bot_loop_factories() -> dict[str, Callable[[], Any]]:
    """For a package's ``pytest_asyncio_loop_factories``: its tests run on the bot process's own loop
    (``bot.app.loop_factory``: uvloop when switched on), asyncio's with ``FACECHAIN_UVLOOP=false``."""
    factory = loop_factory(BotSettings(_env_file=None))
    return {"uvloop": factory} if factory is not None else {"asyncio": asyncio.new_event_loop}
