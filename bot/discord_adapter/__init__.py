"""The Discord adapter: a thin translator between discord.py and the conversation core.

Slash commands, button presses, the /train upload modal and DMs become core events; the core's
replies become interaction responses and messages. The flow itself lives in :mod:`bot.core`.
"""

from bot.discord_adapter.app import DiscordNotConfigured, run_discord, run_sync_command
from bot.discord_adapter.client import DiscordOptions, FacechainClient, intents

__all__ = ["DiscordNotConfigured", "DiscordOptions", "FacechainClient", "intents", "run_discord", "run_sync_command"]
