"""Entry points: :func:`run_discord` (the adapter inside the bot process) and :func:`run_sync_command`
(``facechain-bot discord-sync``).

FACECHAIN_DISCORD_API_URL and FACECHAIN_DISCORD_GATEWAY_URL apply to the client that reads them
(:mod:`bot.discord_adapter.endpoints`): discord.py's class attributes are left alone. A refused token
ends the process with one line (:class:`DiscordStartupError`); an unreachable Discord is retried.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import discord

from bot.config import BotSettings
from bot.discord_adapter.client import DiscordOptions, FacechainClient
from bot.discord_adapter.endpoints import interaction_endpoints
from bot.discord_adapter.sync import invite_url, sync_commands
from bot.errors import OperatorError
from bot.logging_setup import redact, reveal
from bot.service import ConversationService
from storage.blobs import BlobStore
from storage.models import Platform

log = logging.getLogger("facechain.discord")

#: Seconds before the first and at most between two login attempts while Discord is unreachable.
LOGIN_RETRY_FIRST_S = 1.0
LOGIN_RETRY_MAX_S = 30.0

TOKEN_REFUSED = (
    "Discord refused FACECHAIN_DISCORD_TOKEN (401 Unauthorized): copy the token again from the developer "
    "portal (Applications → your app → Bot → Reset Token)"
)


class DiscordNotConfigured(OperatorError):
    """FACECHAIN_DISCORD_TOKEN is not set."""


class DiscordStartupError(OperatorError):
    """Discord refused the bot at login (a wrong token); says so without showing the token."""


def _token(settings: BotSettings) -> str:
    if settings.discord_token is None:
        raise DiscordNotConfigured("FACECHAIN_DISCORD_TOKEN is not set")
    # Registered with the log redaction first: an echoing proxy may put it in an error body.
    return reveal(settings.discord_token)


async def run_discord(
    settings: BotSettings, service: ConversationService, blobs: BlobStore, *, options: DiscordOptions | None = None
) -> None:
    """Run the Discord adapter until cancelled: log in (retrying while Discord is unreachable), sync
    commands if they changed, connect."""
    token = _token(settings)
    api = str(settings.discord_api_url)
    delay = LOGIN_RETRY_FIRST_S
    with interaction_endpoints(api):
        while True:
            client = FacechainClient(settings, service, options, blobs=blobs)
            service.register_notifier(Platform.DISCORD, client.notifier)
            try:
                await client.login(token)
            except (aiohttp.ClientError, OSError, discord.DiscordServerError) as exc:
                await client.close()
                log.warning(
                    "discord: the API at %s is not reachable (%s); retrying in %.0f s", api, _describe(exc), delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, LOGIN_RETRY_MAX_S)
                continue
            except discord.LoginFailure:
                await client.close()
                raise DiscordStartupError(TOKEN_REFUSED) from None
            except discord.HTTPException as exc:
                await client.close()
                raise DiscordStartupError(f"Discord answered {exc.status} to the login at {api}: {exc.text}") from None
            except BaseException:
                await client.close()
                raise
            try:
                await client.connect(reconnect=True)
            finally:
                await client.close()
            return


def _describe(exc: BaseException) -> str:
    if isinstance(exc, discord.HTTPException):
        return f"{exc.status} {exc.text}"
    return f"{type(exc).__name__}: {exc}"


async def run_sync_command(settings: BotSettings, *, force: bool = True, guild_id: int | None = None) -> int:
    """``facechain-bot discord-sync``: upload the slash commands (HTTP only, no gateway); print the invite."""
    token = _token(settings)
    api = str(settings.discord_api_url)
    client = FacechainClient(settings, None, DiscordOptions(sync_on_start=False))
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
        raise DiscordStartupError(TOKEN_REFUSED) from None
    except discord.HTTPException as exc:
        raise DiscordStartupError(f"Discord answered {exc.status} at {api}: {redact(exc.text)}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise DiscordStartupError(
            f"the Discord API at {api} is not reachable ({_describe(exc)}): check the network or "
            "FACECHAIN_DISCORD_API_URL"
        ) from None
    finally:
        await client.close()
    return 0
