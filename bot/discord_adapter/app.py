"""Entry points: :func:`run_discord` (the adapter inside the bot process) and :func:`run_sync_command`
(``facechain-bot discord-sync``).

FACECHAIN_DISCORD_API_URL replaces discord.py's REST base URL and FACECHAIN_DISCORD_GATEWAY_URL its
gateway address. discord.py keeps both in class attributes (``discord.http.Route.BASE``,
``DiscordWebSocket.DEFAULT_GATEWAY``), so they are process-wide: one Discord bot per process, which
is how the bot runs. They are put back when the adapter stops.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import discord
import yarl

from bot.config import BotSettings
from bot.discord_adapter.client import DiscordOptions, FacechainClient
from bot.discord_adapter.sync import invite_url, sync_commands
from bot.service import ConversationService
from storage.models import Platform

log = logging.getLogger("facechain.discord")


class DiscordNotConfigured(RuntimeError):
    """FACECHAIN_DISCORD_TOKEN is not set."""


@contextlib.contextmanager
def discord_endpoints(settings: BotSettings) -> Iterator[yarl.URL | None]:
    """Point discord.py at the configured REST base URL; yield the gateway override, if any."""
    saved_base = discord.http.Route.BASE
    saved_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = str(settings.discord_api_url).rstrip("/")
    try:
        yield yarl.URL(str(settings.discord_gateway_url)) if settings.discord_gateway_url else None
    finally:
        discord.http.Route.BASE = saved_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved_gateway


def _token(settings: BotSettings) -> str:
    if settings.discord_token is None:
        raise DiscordNotConfigured("FACECHAIN_DISCORD_TOKEN is not set")
    return settings.discord_token.get_secret_value()


async def run_discord(
    settings: BotSettings, service: ConversationService, *, options: DiscordOptions | None = None
) -> None:
    """Run the Discord adapter until cancelled: log in, sync commands if they changed, connect."""
    token = _token(settings)
    with discord_endpoints(settings) as gateway:
        client = FacechainClient(settings, service, options, gateway=gateway)
        service.register_notifier(Platform.DISCORD, client.notifier)
        try:
            await client.start(token, reconnect=True)
        finally:
            await client.close()


async def run_sync_command(settings: BotSettings, *, force: bool = True, guild_id: int | None = None) -> int:
    """``facechain-bot discord-sync``: upload the slash commands (HTTP only, no gateway); print the invite."""
    token = _token(settings)
    with discord_endpoints(settings) as gateway:
        client = FacechainClient(settings, None, DiscordOptions(sync_on_start=False), gateway=gateway)
        try:
            await client.login(token)
            if guild_id is not None:
                client.tree.copy_global_to(guild=discord.Object(guild_id))
            changed = await sync_commands(client.tree, client.state_file, guild_id=guild_id, force=force)
            where = "globally" if guild_id is None else f"in server {guild_id}"
            print(f"slash commands {'synced' if changed else 'unchanged, not synced'} {where}")
            if client.application_id is not None:
                print(f"invite link: {invite_url(client.application_id)}")
        except discord.LoginFailure:
            print("facechain-bot discord-sync: Discord refused the token (FACECHAIN_DISCORD_TOKEN)")
            return 1
        except discord.HTTPException as exc:
            print(f"facechain-bot discord-sync: Discord answered {exc.status}: {exc.text}")
            return 1
        finally:
            await client.close()
    return 0
